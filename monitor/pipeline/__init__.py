"""The ingest pipeline: the stages a batch goes through, in order, each a module.

    fence → identify → verify → decode → dedupe → store → watermark → judge →
    proximity → plausibility → episodes → events → integrity
    → commit → settle (state) → ack the devices → acknowledge the messages

All stages run in one transaction: the batch is written whole or not at all. Only after
the commit does `settle` apply what the stages computed to the kept state
(`state.PartitionState`), and only then are the devices' `ack` watermarks published
and the messages acknowledged (to the broker, or to the stream in cluster mode), so
nothing acknowledged is ever lost, and alerts go out (NOTIFY, delivered at commit) only
once they are in the record. Decisions live in `monitor.rules`; SQL in `monitor.store`;
each stage reads and writes the `batch.Batch` it is given and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from monitor.pipeline import (
    decode,
    dedupe,
    episodes,
    events,
    fence,
    identify,
    integrity,
    judge,
    plausibility,
    proximity,
    store,
    verify,
    watermark,
)
from monitor.pipeline.batch import Batch

__all__ = ["STAGES", "Stage", "run", "settle"]

Stage = Callable[[Batch], Awaitable[None]]

# The order is the pipeline: each stage reads what the ones before it found.
STAGES: tuple[tuple[str, Stage], ...] = (
    ("fence", fence.run),  # cluster mode: the partitions are still this process's
    ("identify", identify.run),  # topic → enrolled device
    ("verify", verify.run),  # signature of signed devices
    ("decode", decode.run),  # payload → fixes, events, refused records
    ("dedupe", dedupe.run),  # (device_id, seq) once
    ("store", store.run),  # COPY fixes, events, refusals
    ("watermark", watermark.run),  # ack watermarks, data gaps
    ("judge", judge.run),  # zones, curfews, status: rules in force at each fix time
    ("proximity", proximity.run),  # mobile exclusion zones
    ("plausibility", plausibility.run),  # impossible speeds, fixes from the future
    ("episodes", episodes.run),  # judged changes → alerts
    ("events", events.run),  # device events → conditions, command answers
    ("integrity", integrity.run),  # forged uploads → the integrity alert
)


async def run(b: Batch) -> None:
    """Every stage, in order, inside the caller's transaction."""
    for _name, stage in STAGES:
        await stage(b)


def settle(b: Batch) -> None:
    """After the commit: what the batch computed becomes the kept state."""
    state = b.state
    state.keep_watermarks(b.watermarks)
    state.states.update(b.states)
    state.episode_alerts.update(b.episode_alerts)
    state.checks.update(b.checks)
    state.prox.update(b.proximity)
    state.inside.update(b.inside)
    for f, _ in b.fixes:
        latest = state.last_fix.get(f.device_id)
        if (f.device_id, f.seq, f.t) in b.new_fixes and (latest is None or f.t >= latest.t):
            state.last_fix[f.device_id] = f
