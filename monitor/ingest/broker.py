"""The broker's password and ACL files, generated from the enrolled devices.

Mosquitto reads `password_file` lines `username:$7$101$<salt>$<hash>` (PBKDF2-SHA512,
101 iterations, base64) and an `acl_file` with a block per user. Only used when the
service runs the broker itself (the local run); with someone else's broker these
files are theirs to manage.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import signal
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["acl_lines", "new_password", "password_hash", "reload", "write_atomically"]

_ITERATIONS = 101


def new_password() -> str:
    return secrets.token_urlsafe(24)


def password_hash(password: str) -> str:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return f"$7${_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_lines(service_user: str | None, devices: Iterable[tuple[str, str | None]]) -> list[str]:
    """ACL blocks: the service reads and writes every device topic; a device publishes
    only under its own topics and reads only its own ack and cmd."""
    lines: list[str] = []
    if service_user:
        lines += [
            f"user {service_user}",
            "topic readwrite em/v1/dev/#",
            "topic read owntracks/#",
            "",
        ]
    for device_id, owntracks_topic in devices:
        lines.append(f"user {device_id}")
        if owntracks_topic:
            lines += [f"topic write {owntracks_topic}", f"topic write {owntracks_topic}/#"]
        else:
            lines += [
                f"topic write em/v1/dev/{device_id}/up",
                f"topic write em/v1/dev/{device_id}/state",
                f"topic read em/v1/dev/{device_id}/ack",
                f"topic read em/v1/dev/{device_id}/cmd",
            ]
        lines.append("")
    return lines


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def reload(pid_file: Path) -> str | None:
    """SIGHUP the broker named by its pid file (Mosquitto rereads its password and ACL
    files); the reason when it could not be done."""
    try:
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
    except (OSError, ValueError) as exc:
        return str(exc)
    return None
