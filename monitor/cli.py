"""`monitor serve` and `monitor db migrate`."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="monitor", description="Electronic-monitoring backend")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run ingest, API, websockets and dashboard in one process")
    db = sub.add_parser("db", help="database tasks")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="apply pending migrations and exit")
    audit_cmd = sub.add_parser("audit", help="the audit log")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chain; name the first broken link")
    evidence = sub.add_parser("evidence", help="evidence bundles")
    evidence_sub = evidence.add_subparsers(dest="evidence_command", required=True)
    verify_cmd = evidence_sub.add_parser("verify", help="check a bundle against its manifest")
    verify_cmd.add_argument("file", help="the evidence .zip")
    retention = sub.add_parser("retention", help="delete data whose order ended long enough ago")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    run_cmd = retention_sub.add_parser("run", help="run the retention job once")
    run_cmd.add_argument("--now", help="the instant to judge from (ISO 8601); default now")
    run_cmd.add_argument("--days", type=int, help="retention after an order ends (default 60)")
    args = parser.parse_args(argv)

    if args.command == "evidence":
        import hashlib
        from pathlib import Path

        from monitor.reports import verify_bundle

        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            print(f"monitor: cannot read {args.file}: {exc}", file=sys.stderr)
            return 2
        problems = verify_bundle(data)
        print(f"sha256 {hashlib.sha256(data).hexdigest()}  {args.file}")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        print("bundle intact" if not problems else f"bundle NOT intact: {len(problems)} problem(s)")
        return 1 if problems else 0

    from monitor.config import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "db":
        import psycopg

        from monitor.store import migrate

        try:
            applied = migrate.apply(settings.database_url)
        except psycopg.OperationalError as exc:
            print(f"monitor: cannot reach the database: {exc}".strip(), file=sys.stderr)
            return 2
        print(
            f"applied {len(applied)} migration(s): {', '.join(m.name for m in applied) or 'none'}"
        )
        return 0
    if args.command == "retention":
        from datetime import UTC, datetime

        from monitor.store import retention as retention_store

        now = datetime.now(UTC)
        if args.now:
            now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
            if now.tzinfo is None:
                print("monitor: --now needs a UTC offset or Z", file=sys.stderr)
                return 2
        days = args.days if args.days is not None else settings.retention_days
        outcome = retention_store.run(settings.database_url, now, days)
        print(
            f"retention as of {outcome.as_of.isoformat()} ({days} days after an order ends):"
            f" {len(outcome.expired_subjects)} subject(s) expired,"
            f" {outcome.chunks_dropped} chunk(s) dropped, {outcome.rows_deleted} row(s) deleted"
        )
        return 0
    if args.command == "audit":
        import psycopg

        from monitor.store import audit

        try:
            result = audit.verify(settings.database_url)
        except psycopg.Error as exc:
            print(f"monitor: cannot read the audit log: {exc}".strip(), file=sys.stderr)
            return 2
        if result.broken_at is not None:
            print(
                f"audit log BROKEN at record {result.broken_at}: {result.reason}"
                f" ({result.checked} records checked)"
            )
            return 1
        print(f"audit log intact: {result.checked} records, every link holds")
        return 0
    import uvicorn

    from monitor.api.app import create_app
    from monitor.api.websocket import LiveProtocol

    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        # uvicorn's sans-I/O websocket protocol, writing each turn's frames at once.
        ws=LiveProtocol,
        # Alert messages are small; compressing each one per client costs more CPU
        # than it saves on a control-centre network.
        ws_per_message_deflate=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
