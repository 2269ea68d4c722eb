"""The evidence bundle: a ZIP of the exported files and `manifest.json`, reproducible
to the byte and checkable by anyone.

The manifest lists every other file with its size and SHA-256, and names the subject,
the period, the record's latest time (`as_of`, standing in for a generation time) and
the software that made it; its `seal` is the SHA-256 of the manifest itself (its
canonical JSON without the seal). Nothing in the bundle comes from the clock or the
requester (who asked and why goes to the audit log), and the container is written in
one canonical way: members stored uncompressed (so no compressor version matters), in
a fixed order, dated 1980-01-01 00:00, mode 0644, no comment, no extra fields. The same
record therefore gives the same bytes, and `verify` can rebuild the container from its
members and compare: any changed byte anywhere, in a member, in the manifest or in the
ZIP structure, is reported.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from monitor.domain import iso

__all__ = ["FORMAT", "MANIFEST", "Member", "build", "manifest", "pack", "verify"]

FORMAT: Final = "em-monitor evidence bundle, version 1"
MANIFEST: Final = "manifest.json"
_DATE: Final = (1980, 1, 1, 0, 0, 0)
_MODE: Final = 0o100644 << 16  # a regular file, rw-r--r--

Member = tuple[str, bytes, str]  # name, content, media type


def _canonical(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()


def _seal(body: Mapping[str, Any]) -> str:
    unsealed = {k: v for k, v in body.items() if k != "seal"}
    return hashlib.sha256(_canonical(unsealed)).hexdigest()


def manifest(
    members: Sequence[Member],
    *,
    subject: Mapping[str, Any],
    since: datetime | None,
    until: datetime | None,
    as_of: datetime | None,
    generated_by: str,
    counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The manifest of `members` (everything in the bundle but the manifest)."""
    body: dict[str, Any] = {
        "format": FORMAT,
        "generated_by": generated_by,
        "subject": dict(subject),
        "range": {"since": iso(since), "until": iso(until)},
        "as_of": iso(as_of),
        "counts": dict(counts or {}),
        "files": [
            {
                "name": name,
                "media_type": media_type,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
            for name, content, media_type in members
        ],
    }
    body["seal"] = {"algorithm": "sha256", "value": _seal(body)}
    return body


def pack(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """(name, content) pairs as a ZIP in the one canonical way (see the module)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=False) as zf:
        for name, content in entries:
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = _MODE
            zf.writestr(info, content)
    return buf.getvalue()


def build(
    members: Sequence[Member],
    *,
    subject: Mapping[str, Any],
    since: datetime | None,
    until: datetime | None,
    as_of: datetime | None,
    generated_by: str,
    counts: Mapping[str, int] | None = None,
) -> bytes:
    """The bundle: `manifest.json` first, then the members in the order given."""
    names = [m[0] for m in members]
    if MANIFEST in names or len(set(names)) != len(names):
        raise ValueError(f"member names must be unique and not {MANIFEST!r}: {names}")
    body = manifest(
        members,
        subject=subject,
        since=since,
        until=until,
        as_of=as_of,
        generated_by=generated_by,
        counts=counts,
    )
    return pack([(MANIFEST, _canonical(body)), *((n, c) for n, c, _ in members)])


def verify(data: bytes) -> list[str]:
    """What is wrong with a bundle: an empty list when it is intact."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as exc:  # zipfile raises many kinds on damaged input
        return [f"not a readable ZIP file: {exc}"]
    problems: list[str] = []
    contents: dict[str, bytes] = {}
    order: list[str] = []
    for info in infos:
        if info.filename in contents:
            problems.append(f"{info.filename}: appears more than once")
            continue
        try:
            contents[info.filename] = zf.read(info)
            order.append(info.filename)
        except Exception as exc:  # a damaged member, likewise
            problems.append(f"{info.filename}: cannot be read ({exc})")
    raw = contents.get(MANIFEST)
    if raw is None:
        return [*problems, f"{MANIFEST}: missing"]
    try:
        body = json.loads(raw.decode())
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError) as exc:
        return [*problems, f"{MANIFEST}: not valid JSON ({exc})"]
    if _canonical(body) != raw:
        problems.append(f"{MANIFEST}: not in its canonical form (it was edited)")
    seal = body.get("seal")
    if not isinstance(seal, dict) or seal.get("value") != _seal(body):
        problems.append(f"{MANIFEST}: its seal does not match its content (it was edited)")
    if body.get("format") != FORMAT:
        problems.append(f"{MANIFEST}: unknown format {body.get('format')!r}")
    files = body.get("files")
    if not isinstance(files, list):
        return [*problems, f"{MANIFEST}: no list of files"]
    listed: list[str] = []
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{MANIFEST}: a file entry without a name")
            continue
        name = entry["name"]
        listed.append(name)
        content = contents.get(name)
        if content is None:
            if not any(p.startswith(f"{name}:") for p in problems):
                problems.append(f"{name}: listed in the manifest but missing")
            continue
        if len(content) != entry.get("size"):
            problems.append(f"{name}: {len(content)} bytes, the manifest says {entry.get('size')}")
        if hashlib.sha256(content).hexdigest() != entry.get("sha256"):
            problems.append(f"{name}: its SHA-256 does not match the manifest (it was changed)")
    for name in order:
        if name != MANIFEST and name not in listed:
            problems.append(f"{name}: not listed in the manifest")
    if not problems:
        expected = pack([(MANIFEST, raw), *((n, contents[n]) for n in listed)])
        if expected != data:
            problems.append(
                "the ZIP container differs from its canonical form (its order, dates,"
                " attributes or structure were changed)"
            )
    return problems
