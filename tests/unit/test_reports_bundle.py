"""monitor.reports.bundle: a reproducible evidence ZIP whose verification catches any
changed, missing or added byte or file."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any

import pytest

from monitor.reports import bundle, verify_bundle

SINCE = datetime(2026, 11, 22, tzinfo=UTC)
UNTIL = datetime(2026, 11, 23, tzinfo=UTC)
SUBJECT = {"id": "s1", "name": "Иванов Иван", "external_id": "IIN-1", "timezone": "Asia/Almaty"}


def members(**changes: bytes) -> list[bundle.Member]:
    files = {
        "fixes.csv": b"t,lat,lon\r\n2026-11-22T13:00:00.000Z,43.2,76.9\r\n",
        "fixes.geojson": b'{"type":"FeatureCollection","features":[]}\n',
        "alerts.csv": b'id,note\r\na1,"said ""hi"", left"\r\n',
        "report.pdf": b"%PDF-1.4 not really\n",
    }
    files.update(changes)
    return [(name, content, "application/octet-stream") for name, content in files.items()]


def make(items: list[bundle.Member] | None = None, **meta: Any) -> bytes:
    args: dict[str, Any] = {
        "subject": SUBJECT,
        "since": SINCE,
        "until": UNTIL,
        "as_of": datetime(2026, 11, 22, 23, 59, tzinfo=UTC),
        "generated_by": "em-monitor test",
        "counts": {"fixes": 1},
    }
    args.update(meta)
    return bundle.build(items if items is not None else members(), **args)


def entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def rezip(items: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in items:
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)
    return buf.getvalue()


def test_the_same_members_give_the_same_bytes_and_verify() -> None:
    first, second = make(), make()
    assert first == second
    assert verify_bundle(first) == []


def test_the_manifest_lists_every_file_with_its_digest_and_the_record() -> None:
    data = make()
    items = dict(entries(data))
    assert list(items) == [
        "manifest.json",
        "fixes.csv",
        "fixes.geojson",
        "alerts.csv",
        "report.pdf",
    ]
    manifest = json.loads(items["manifest.json"])
    assert manifest["format"] == bundle.FORMAT
    assert manifest["subject"] == SUBJECT
    assert manifest["range"] == {
        "since": "2026-11-22T00:00:00.000Z",
        "until": "2026-11-23T00:00:00.000Z",
    }
    assert manifest["as_of"] == "2026-11-22T23:59:00.000Z"
    assert manifest["generated_by"] == "em-monitor test"
    for entry in manifest["files"]:
        content = items[entry["name"]]
        assert entry["size"] == len(content)
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
    assert [f["name"] for f in manifest["files"]] == list(items)[1:]


def test_the_container_is_canonical() -> None:
    with zipfile.ZipFile(io.BytesIO(make())) as zf:
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.external_attr >> 16 == 0o100644
        assert zf.comment == b""


def test_any_flipped_byte_anywhere_is_caught() -> None:
    data = make()
    assert len(data) < 4000  # small enough to try every position
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x01
        assert verify_bundle(bytes(damaged)), f"a flipped bit at byte {pos} went unnoticed"


@pytest.mark.parametrize("name", ["fixes.csv", "fixes.geojson", "alerts.csv", "report.pdf"])
def test_a_changed_member_is_named(name: str) -> None:
    items = entries(make())
    changed = [(n, c[:-1] + bytes([c[-1] ^ 0x20]) if n == name else c) for n, c in items]
    problems = verify_bundle(bundle.pack(changed))
    assert problems == [f"{name}: its SHA-256 does not match the manifest (it was changed)"]


def test_a_missing_file_is_named() -> None:
    items = [(n, c) for n, c in entries(make()) if n != "alerts.csv"]
    assert verify_bundle(bundle.pack(items)) == ["alerts.csv: listed in the manifest but missing"]


def test_an_extra_file_is_named() -> None:
    items = [*entries(make()), ("notes.txt", b"added later")]
    assert verify_bundle(bundle.pack(items)) == ["notes.txt: not listed in the manifest"]


def test_an_edited_manifest_is_caught_even_when_it_stays_canonical() -> None:
    items = entries(make())
    manifest = json.loads(items[0][1])
    manifest["range"]["since"] = "2026-11-01T00:00:00.000Z"
    edited = (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()
    problems = verify_bundle(bundle.pack([("manifest.json", edited), *items[1:]]))
    assert problems == ["manifest.json: its seal does not match its content (it was edited)"]


def test_a_reformatted_manifest_is_caught() -> None:
    items = entries(make())
    compact = json.dumps(json.loads(items[0][1])).encode()
    problems = verify_bundle(bundle.pack([("manifest.json", compact), *items[1:]]))
    assert problems == ["manifest.json: not in its canonical form (it was edited)"]


def test_the_same_files_rezipped_differently_are_caught() -> None:
    problems = verify_bundle(rezip(entries(make())))
    assert len(problems) == 1
    assert problems[0].startswith("the ZIP container differs from its canonical form")


def test_reordered_members_are_caught() -> None:
    items = entries(make())
    problems = verify_bundle(bundle.pack([items[0], *reversed(items[1:])]))
    assert len(problems) == 1
    assert "canonical form" in problems[0]


def test_not_a_zip_and_no_manifest() -> None:
    assert verify_bundle(b"PK\x03\x04 garbage")[0].startswith("not a readable ZIP file")
    assert verify_bundle(b"")[0].startswith("not a readable ZIP file")
    items = [(n, c) for n, c in entries(make()) if n != "manifest.json"]
    assert verify_bundle(bundle.pack(items)) == ["manifest.json: missing"]


def test_different_records_give_different_bundles() -> None:
    assert make() != make(members(**{"fixes.csv": b"t\r\n"}))
    assert make() != make(until=datetime(2026, 11, 24, tzinfo=UTC))


def test_member_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        make([*members(), ("fixes.csv", b"again", "text/csv")])
    with pytest.raises(ValueError, match="manifest"):
        make([("manifest.json", b"{}", "application/json")])
