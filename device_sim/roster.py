"""The simulated caseload: who wears which device, where they live, and the device
credentials the backend issued, kept in `roster.json` in the fleet's state directory.

Credentials are shown once by the API, so the roster is saved after every step of an
enrolment: a run that is interrupted half-way, or started again, picks up where the
last one stopped instead of enrolling twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from device_sim.api import ConflictError, OperatorClient
from device_sim.tracks import LonLat, destination

__all__ = ["CITIES", "HOME_RADIUS_M", "Member", "Roster", "Scenario", "enrol", "plan_member"]

log = logging.getLogger(__name__)

Scenario = Literal["breaker", "compliant", "commuter"]

# City centres (lon, lat); homes are scattered within a few kilometres of them.
CITIES: dict[str, LonLat] = {
    "Almaty": LonLat(76.8890, 43.2380),
    "Astana": LonLat(71.4300, 51.1300),
}
# Kazakhstan keeps one time zone; the tz database names it after Almaty.
TIMEZONE = "Asia/Almaty"
HOME_RADIUS_M = 500.0  # the yellow status preset
_FILE = "roster.json"


@dataclass(frozen=True, slots=True)
class Member:
    """One wearer and device. Empty strings and None mark steps not done yet."""

    index: int
    device_id: str
    name: str
    external_id: str
    city: str
    home: LonLat
    scenario: Scenario
    subject_id: str = ""
    status_set: bool = False
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    signing_key: str | None = None

    @property
    def enrolled(self) -> bool:
        return self.mqtt_username is not None


def plan_member(index: int, seed: int, prefix: str) -> Member:
    """The member at `index`, a pure function of the seed: the first is the breaker;
    every fifth is a commuter (a green status: free to cross town to work and shops);
    the others are compliant (yellow: within 500 m of home)."""
    rng = np.random.default_rng([seed, index])
    city = "Almaty" if index % 2 == 0 else "Astana"
    # Uniform over a 4 km disc, so homes don't crowd the centre.
    r = 4000.0 * math.sqrt(float(rng.uniform()))
    bearing = float(rng.uniform(0, 2 * math.pi))
    home = destination(CITIES[city], r * math.sin(bearing), r * math.cos(bearing))
    device_id = f"{prefix}-{index + 1:04d}"
    return Member(
        index=index,
        device_id=device_id,
        name=f"Simulated subject {index + 1:04d}",
        external_id=f"SIM-CASE-{device_id}",
        city=city,
        home=LonLat(round(home.lon, 7), round(home.lat, 7)),
        scenario="breaker" if index == 0 else "commuter" if index % 5 == 4 else "compliant",
    )


class Roster:
    """The members, loaded from and saved to `directory/roster.json`."""

    def __init__(self, directory: Path, members: list[Member] | None = None) -> None:
        self.directory = directory
        self.members = members or []

    @classmethod
    def load(cls, directory: Path) -> Roster:
        path = directory / _FILE
        if not path.exists():
            return cls(directory)
        raw = json.loads(path.read_text(encoding="utf-8"))
        members = [Member(**{**m, "home": LonLat(*m["home"])}) for m in raw.get("members", [])]
        return cls(directory, members)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / _FILE
        tmp = path.with_suffix(".tmp")
        data = {"members": [asdict(m) for m in self.members]}
        # The file holds device passwords and signing keys: owner only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
        os.replace(tmp, path)

    def ensure(self, count: int, seed: int, prefix: str) -> list[Member]:
        """The first `count` members: those saved are kept as they are (they may be
        enrolled already), the missing ones are planned from the seed."""
        by_index = {m.index: m for m in self.members}
        for index in range(count):
            if index not in by_index:
                by_index[index] = plan_member(index, seed, prefix)
        self.members = [by_index[i] for i in sorted(by_index)]
        self.save()
        return self.members[:count]

    def update(self, member: Member) -> None:
        self.members = [member if m.index == member.index else m for m in self.members]
        self.save()


def enrol(api: OperatorClient, roster: Roster, members: list[Member]) -> list[Member]:
    """Create each member's subject, set its status (yellow around its home; green for
    a commuter) and enrol its device, skipping the steps the roster says are done.
    Returns the members updated.

    A 409 for a device the roster has no credentials for cannot be repaired from here
    (the secrets were shown once, to someone else): it is raised with advice.
    """
    done: list[Member] = []
    for member in members:
        m = member
        if not m.subject_id:
            subject = api.create_subject(m.name, m.external_id, TIMEZONE)
            m = replace(m, subject_id=str(subject["id"]))
            roster.update(m)
            log.info("%s: subject %s created", m.device_id, m.subject_id)
        if not m.status_set:
            if m.scenario == "commuter":
                api.set_status(m.subject_id, "green")
            else:
                api.set_status(m.subject_id, "yellow", home=(m.home.lon, m.home.lat))
            m = replace(m, status_set=True)
            roster.update(m)
        if not m.enrolled:
            try:
                enrolment = api.enrol_device(m.device_id, m.subject_id, signed=True)
            except ConflictError as exc:
                raise ConflictError(
                    "POST",
                    "/api/v1/devices",
                    409,
                    f"{m.device_id} is enrolled already but {roster.directory} holds no "
                    f"credentials for it: use the state directory of the run that enrolled "
                    f"it, or another --prefix ({exc.detail})",
                ) from None
            m = replace(
                m,
                mqtt_username=enrolment.mqtt_username,
                mqtt_password=enrolment.mqtt_password,
                signing_key=enrolment.signing_key,
            )
            roster.update(m)
            log.info("%s: enrolled for subject %s", m.device_id, m.subject_id)
        done.append(m)
    return done
