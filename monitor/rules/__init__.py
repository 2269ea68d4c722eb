"""Every decision, pure: no I/O, no clock (`now` is passed in).

- `book`: the rules in force at any instant (zones, status presets, shared zone sets,
  proximity rules);
- `engine`: accuracy-aware decisions, debounce, crossings, episodes and their alert
  changes (`evaluate`, `rejudge`, `rejudge_window`, `evaluate_proximity`);
- `batch`: the same decisions for many subjects at once, in numpy (`judge_batch`);
- `schedule`: weekly schedules with exceptions, in the subject's time zone;
- `plausibility`: impossible speeds and future fix times (spoofing flags);
- `liveness`: communication loss, location loss, battery;
- `events`: what device events mean for alerts;
- `watermark`: which sequence numbers of a device are accounted for.
"""
