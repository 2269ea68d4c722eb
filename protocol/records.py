"""What an upload (`em/v1/dev/{device_id}/up`) may carry: fix sources, event kinds, and
how many records at most (protocol v1, with the phone agents' v1.1 additions apart)."""

from __future__ import annotations

from typing import Final

__all__ = ["EVENT_KINDS", "FIX_SOURCES", "MAX_RECORDS", "PHONE_EVENT_KINDS"]

# Records (fixes and events together) in one upload; more refuses the whole upload.
MAX_RECORDS: Final = 500

# A fix's `src`. `beacon`: the home RF beacon is in range, lat/lon are then the home's.
FIX_SOURCES: Final = frozenset({"gnss", "wifi", "cell", "beacon"})

# The event kinds of protocol v1: what the backend accepts and the simulator sends.
EVENT_KINDS: Final = frozenset(
    {
        "strap_open",
        "strap_closed",
        "case_open",
        "battery_low",
        "battery_critical",
        "charger_on",
        "charger_off",
        "no_fix",
        "jamming",
        "sos",
        "cmd_result",
        "boot",
    }
)

# Version 1.1 adds these for phone agents. They are kept out of EVENT_KINDS on purpose:
# the protocol says a v1 backend refuses them as unknown kinds, and the backend here
# speaks v1, so folding them in would change what it accepts.
PHONE_EVENT_KINDS: Final = frozenset({"checkin", "tag_lost", "tag_found", "mock_location"})
