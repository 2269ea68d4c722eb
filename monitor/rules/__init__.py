"""Every decision: zones, schedules, status presets, debounce. Pure: no I/O, no clock."""
