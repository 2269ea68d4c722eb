"""`device-sim`: a fleet of simulated bracelets, scenarios and their check, or one raw
upload.

    device-sim run --api-url http://127.0.0.1:8000 --admin-user admin \\
        --admin-password PW --mqtt-url mqtt://127.0.0.1:1883 --devices 5 \\
        --state-dir .local/sim --seed 1
    device-sim scenario all --api-url http://127.0.0.1:8000 --admin-user admin \\
        --admin-password PW --mqtt-url mqtt://127.0.0.1:1883 --state-dir .local/sc \\
        --seed 1 --expect-file .local/sc/expected.json
    device-sim check --api-url http://127.0.0.1:8000 --admin-user admin \\
        --admin-password PW --expect-file .local/sc/expected.json
    device-sim upload --mqtt-url mqtt://127.0.0.1:1883 --device-id BR-0001 \\
        --username BR-0001 --password P --signing-key K --file payload.json

Exit status: 0 success (for `check`: everything matches), 1 a failure or a difference,
2 a usage error or a backend that cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from device_sim.api import ApiError, ConflictError, OperatorClient
from device_sim.check import describe_error, run_check
from device_sim.device import Bracelet, topic
from device_sim.expect import ExpectFile, iso_ms, ms_of
from device_sim.fleet import Broker, Fleet, Progress
from device_sim.progress import Display
from device_sim.roster import Roster, enrol

__all__ = ["main", "parse_broker"]


def parse_broker(url: str) -> Broker:
    """`mqtt://host:port` or `mqtts://host:port` (TLS); credentials in it are ignored,
    since each device logs in with its own."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected mqtt://host:port or mqtts://host:port: {url}")
    tls = parts.scheme == "mqtts"
    return Broker(parts.hostname, parts.port or (8883 if tls else 1883), tls)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="device-sim", description="Simulated bracelets speaking device protocol v1."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="enrol a fleet through the operator API (once) and run it",
        description="Enrols the fleet if the state directory holds no credentials yet, "
        "then moves every wearer around their home. The first one (the breaker) leaves "
        "its 500 m radius within two minutes and stays out about seven; every fifth is a "
        "commuter (green status) whose day goes from home to work and shops across town, "
        "with Wi-Fi positions indoors and a battery charged at night.",
    )
    run.add_argument("--api-url", default="http://127.0.0.1:8000")
    run.add_argument("--admin-user", default="admin")
    run.add_argument(
        "--admin-password",
        default=os.environ.get("MONITOR_ADMIN_PASSWORD"),
        help="default: $MONITOR_ADMIN_PASSWORD",
    )
    run.add_argument(
        "--no-api",
        action="store_true",
        help="skip enrolment: devices log in as themselves without a password, unsigned "
        "(an anonymous development broker, load tests)",
    )
    run.add_argument("--mqtt-url", type=parse_broker, default=parse_broker("mqtt://127.0.0.1"))
    run.add_argument("--devices", type=int, default=5)
    run.add_argument("--state-dir", type=Path, default=Path(".local/sim"))
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--prefix", default="SIM", help="device ids are PREFIX-0001, ...")
    run.add_argument(
        "--speedup",
        type=_positive,
        default=1.0,
        help="scenario seconds per wall second; fix intervals shrink to match",
    )
    run.add_argument("--duration-s", type=_positive, help="stop after this long (default never)")
    run.add_argument("--fix-interval-s", type=_positive, default=15.0)
    run.add_argument("--breaker-fix-interval-s", type=_positive, default=5.0)
    run.add_argument("--batch-size", type=int, default=500, help="records per upload, at most 500")
    run.add_argument(
        "--report-every-s",
        type=_positive,
        help="progress every so often (default: 0.5 s redrawn on a terminal, else 5 s)",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "tty", "plain"),
        default="auto",
        help="tty: redraw a block in place; plain: a line per report; auto: tty on a terminal",
    )

    scenario = commands.add_parser(
        "scenario",
        help="run seeded scenarios against a backend and write the alerts they expect",
        description="Enrols what each scenario needs through the operator API, plays its "
        "records (stamped in the past, uploaded in batches: seconds of wall time), waits "
        "for them to be acknowledged, and writes the expect file that `device-sim check` "
        "reads. NAME is a scenario, a comma-separated list, `all`, or `list` to show them.",
    )
    scenario.add_argument("name", metavar="NAME")
    _api_arguments(scenario)
    scenario.add_argument("--mqtt-url", type=parse_broker, default=parse_broker("mqtt://127.0.0.1"))
    scenario.add_argument("--state-dir", type=Path, default=Path(".local/scenarios"))
    scenario.add_argument("--seed", type=int, default=1)
    scenario.add_argument(
        "--prefix",
        help="device ids are PREFIX-CODE (default S<seed>); another prefix to run the same "
        "seed again on one backend",
    )
    scenario.add_argument(
        "--anchor",
        help="the instant the scenarios' times count back from, ISO 8601 (default now); "
        "the same seed, anchor and prefix make the same records",
    )
    scenario.add_argument("--expect-file", type=Path, help="default: STATE_DIR/expected.json")
    scenario.add_argument(
        "--upload-gap-s",
        type=float,
        default=0.0,
        help="at least this long between two uploads of a bracelet: a stream of uploads "
        "over seconds instead of one burst (to inject faults into)",
    )
    scenario.add_argument(
        "--timeout-s",
        type=_positive,
        default=120.0,
        help="give up on scenarios not done this long after they began",
    )

    check = commands.add_parser(
        "check",
        help="compare what the backend stored and alerted with the journals and the expect file",
        description="Reads every device's fixes and every expected subject's alerts "
        "through the operator API. Each fix seq a device journal says was acknowledged "
        "must be stored exactly once (events are acknowledged too, but the API has no "
        "events read: they are counted, not compared), and each expectation must hold. "
        "Exit status 0 when everything matches, 1 on a difference, 2 when the backend "
        "cannot be asked.",
    )
    _api_arguments(check)
    check.add_argument("--expect-file", type=Path, help="what `scenario` wrote")
    check.add_argument(
        "--state-dir",
        type=Path,
        help="device journals (default: the expect file's state directory)",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="alerts of the scenarios' subjects that no expectation names are differences",
    )
    check.add_argument("--workers", type=int, default=4, help="API reads in parallel")
    for sub in (scenario, check):
        sub.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="log every step (check: print every finding, notes included)",
        )

    upload = commands.add_parser(
        "upload",
        help="publish one raw upload from a file and print the ack",
        description="Publishes the file's bytes unchanged to em/v1/dev/ID/up (signed when "
        "a key is given) and prints the backend's ack. It speaks as the device, in the "
        "device's own seq space: a seq stored this way is taken for a duplicate when the "
        "device itself uses it later.",
    )
    upload.add_argument("--mqtt-url", type=parse_broker, default=parse_broker("mqtt://127.0.0.1"))
    upload.add_argument("--device-id", required=True)
    upload.add_argument("--username", help="default: the device id")
    upload.add_argument("--password")
    upload.add_argument("--signing-key", help="base64url, as enrolment returned it")
    upload.add_argument("--file", type=Path, required=True, help="the payload; - for stdin")
    upload.add_argument("--timeout-s", type=_positive, default=10.0)
    upload.add_argument("--mqtt311", action="store_true", help="MQTT 3.1.1 (unsigned only)")
    return parser


def _api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", default="http://127.0.0.1:8000")
    parser.add_argument("--admin-user", default="admin")
    parser.add_argument(
        "--admin-password",
        default=os.environ.get("MONITOR_ADMIN_PASSWORD"),
        help="default: $MONITOR_ADMIN_PASSWORD",
    )


class _Stop:
    """Set by SIGINT or SIGTERM; a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("stopping: closing connections (again to abort)", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    if args.devices < 1:
        print("--devices must be at least 1", file=sys.stderr)
        return 2
    roster = Roster.load(args.state_dir)
    members = roster.ensure(args.devices, args.seed, args.prefix)
    if not args.no_api and not all(m.enrolled and m.status_set for m in members):
        if not args.admin_password:
            print(
                "--admin-password (or MONITOR_ADMIN_PASSWORD) is needed to enrol", file=sys.stderr
            )
            return 2
        api = OperatorClient(args.api_url)
        try:
            api.login(args.admin_user, args.admin_password)
            members = enrol(api, roster, members)
        except ApiError as exc:
            print(f"enrolment failed: {exc}", file=sys.stderr)
            return 1
        except urllib.error.URLError as exc:
            print(f"operator API unreachable at {args.api_url}: {exc.reason}", file=sys.stderr)
            return 1
    for m in members:
        print(
            f"{m.device_id}  {m.scenario:9}  {m.city:6}  home {m.home.lat:.5f} N "
            f"{m.home.lon:.5f} E  subject {m.subject_id or '-'}",
            flush=True,
        )
    fleet = Fleet.build(
        members,
        args.mqtt_url,
        args.state_dir,
        args.seed,
        speedup=args.speedup,
        fix_interval_s=args.fix_interval_s,
        breaker_fix_interval_s=args.breaker_fix_interval_s,
        batch_size=args.batch_size,
    )
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    display = Display(sys.stdout, args.progress, title=f"device-sim run (seed {args.seed})")
    every = args.report_every_s or (0.5 if display.tty else 5.0)

    def report(progress: Progress) -> None:
        display.update(progress)

    final = fleet.run(
        lambda: stop.requested,
        duration_s=args.duration_s,
        report=report,
        notice=display.notice,
        report_every_s=every,
    )
    display.finish(final)
    return 0


def _login(args: argparse.Namespace, retry_s: float) -> OperatorClient | int:
    """A logged-in client, or the exit status after saying why not."""
    if not args.admin_password:
        print("--admin-password (or MONITOR_ADMIN_PASSWORD) is needed", file=sys.stderr)
        return 2
    try:
        # Not reachable at all is said at once; once logged in, a restart is waited out.
        api = OperatorClient(args.api_url)
        api.login(args.admin_user, args.admin_password)
        api.retry_s = retry_s
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (ApiError, OSError) as exc:
        print(f"cannot log in at {args.api_url}: {describe_error(exc)}", file=sys.stderr)
        return 2
    return api


def _scenario(args: argparse.Namespace) -> int:
    from device_sim.scenarios import SCENARIOS, Context, play_all, prepare_all

    if args.name == "list":
        for name, cls in SCENARIOS.items():
            print(f"{name:16} {cls.summary}")
        return 0
    names = list(SCENARIOS) if args.name == "all" else [n.strip() for n in args.name.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        print(
            f"unknown scenario(s) {unknown}: choose from {', '.join(SCENARIOS)}, or all",
            file=sys.stderr,
        )
        return 2
    try:
        anchor_ms = ms_of(args.anchor) if args.anchor else time.time_ns() // 1_000_000
    except ValueError:
        print(f"--anchor: not an ISO 8601 instant: {args.anchor}", file=sys.stderr)
        return 2
    anchor_ms -= anchor_ms % 1000
    if anchor_ms > time.time_ns() // 1_000_000 + 60_000:
        print("--anchor: in the future; the scenarios need it now or earlier", file=sys.stderr)
        return 2
    prefix = args.prefix or f"S{args.seed}"
    expect_path: Path = args.expect_file or args.state_dir / "expected.json"
    api = _login(args, retry_s=60.0)
    if isinstance(api, int):
        return api
    expect = ExpectFile(
        seed=args.seed,
        anchor=iso_ms(anchor_ms),
        prefix=prefix,
        api_url=args.api_url,
        state_dir=str(args.state_dir.resolve()),
        scenarios=names,
    )
    broker: Broker = args.mqtt_url
    ctx = Context(
        api,
        broker,
        args.state_dir,
        args.seed,
        anchor_ms,
        prefix,
        expect,
        upload_gap_s=max(0.0, args.upload_gap_s),
    )
    scenarios = [SCENARIOS[n](ctx) for n in names]
    print(
        f"scenarios {', '.join(names)}: seed {args.seed}, anchor {expect.anchor}, prefix {prefix}",
        flush=True,
    )
    try:
        prepare_all(ctx, scenarios, sys.stdout)
    except ConflictError as exc:
        print(
            f"{exc}: this prefix was used on this backend already: pass another --prefix",
            file=sys.stderr,
        )
        return 2
    except (ApiError, OSError) as exc:
        print(f"enrolment failed: {describe_error(exc)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        outcomes = play_all(ctx, scenarios, sys.stdout, timeout_s=args.timeout_s)
    finally:
        expect.save(expect_path)
    failed = [o for o in outcomes if not o.ok]
    records = sum(o.records for o in outcomes)
    t = ctx.totals()
    print(
        f"bracelets: {t['devices']} device(s), {t['records']} record(s) made, "
        f"{t['sent']} sent in {t['uploads']} upload(s) ({t['sent'] - t['records']} resent), "
        f"{t['acks']} ack(s) received, {t['connects']} connection(s)",
        flush=True,
    )
    print(
        f"{len(outcomes) - len(failed)}/{len(outcomes)} scenario(s) done in "
        f"{time.monotonic() - started:.1f} s, {records} record(s); "
        f"{len(expect.expectations)} expectation(s) in {expect_path}",
        flush=True,
    )
    return 1 if failed else 0


def _check(args: argparse.Namespace) -> int:
    expect: ExpectFile | None = None
    if args.expect_file is not None:
        try:
            expect = ExpectFile.load(args.expect_file)
        except (OSError, ValueError) as exc:
            print(f"check: {exc}", file=sys.stderr)
            return 2
    state_dir: Path | None = args.state_dir
    if state_dir is None and expect is not None and expect.state_dir:
        state_dir = Path(expect.state_dir)
    if expect is None and state_dir is None:
        print("check: give --expect-file, --state-dir or both", file=sys.stderr)
        return 2
    if state_dir is not None and not state_dir.is_dir():
        print(f"check: no state directory {state_dir}", file=sys.stderr)
        return 2
    api = _login(args, retry_s=30.0)
    if isinstance(api, int):
        return api
    try:
        return run_check(
            api,
            expect,
            state_dir,
            sys.stdout,
            strict=args.strict,
            verbose=args.verbose,
            workers=args.workers,
        )
    except (ApiError, OSError) as exc:
        print(f"check: the API failed: {describe_error(exc)}", file=sys.stderr)
        return 2


def _upload(args: argparse.Namespace) -> int:
    payload = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    # The tool has no journal of its own: an ack beyond its (empty) numbering is the
    # normal case here, not the lost state the journal warns about.
    logging.getLogger("device_sim.journal").setLevel(logging.ERROR)
    broker: Broker = args.mqtt_url
    try:
        bracelet = Bracelet(
            args.device_id,
            broker.host,
            broker.port,
            args.username or args.device_id,
            args.password,
            signing_key=args.signing_key,
            mqtt5=not args.mqtt311,
            tls=broker.tls,
        )
    except ValueError as exc:
        print(f"upload: {exc}", file=sys.stderr)
        return 2
    try:
        bracelet.connect(timeout_s=args.timeout_s)
    except OSError as exc:
        print(f"upload: cannot connect to {broker.host}:{broker.port}: {exc}", file=sys.stderr)
        return 1
    try:
        before = bracelet.last_ack
        print(f"ack before upload: {_ack_text(before)}")
        seqs = _seqs(payload)
        acks_before = bracelet.acks_received
        if not bracelet.publish_raw(payload, timeout_s=args.timeout_s):
            print("upload: the broker did not acknowledge the publish (PUBACK)", file=sys.stderr)
            return 1
        print(f"published {len(payload)} bytes to {topic(args.device_id, 'up')}")
        # Wait for an ack that covers the upload's records (or any new one when the
        # payload is not readable enough to say which records it holds).
        covered = False
        deadline = time.monotonic() + args.timeout_s
        while time.monotonic() < deadline:
            last = bracelet.last_ack
            if bracelet.acks_received > acks_before and (not seqs or (last or 0) >= max(seqs)):
                covered = True
                break
            bracelet.poll(0.05)
        print(f"ack after upload: {_ack_text(bracelet.last_ack)}")
        if not covered:
            print(
                f"upload: no ack covering it within {args.timeout_s:g} s "
                "(rejected, a hole before it, or no backend listening)",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        bracelet.close()


def _ack_text(upto: int | None) -> str:
    return "none" if upto is None else json.dumps({"upto": upto})


def _seqs(payload: bytes) -> list[int]:
    """The seqs in an upload, as far as it can be read (it may be deliberately bad)."""
    try:
        data = json.loads(payload)
        records = [*data.get("fixes", []), *data.get("events", [])]
        return [r["seq"] for r in records if isinstance(r.get("seq"), int)]
    except (ValueError, AttributeError, TypeError):
        return []


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "run":
        return _run(args)
    if args.command == "scenario":
        return _scenario(args)
    if args.command == "check":
        return _check(args)
    return _upload(args)


if __name__ == "__main__":
    sys.exit(main())
