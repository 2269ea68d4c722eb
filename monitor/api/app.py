"""The composition root: builds the runtime (pool, ingest, broker connection, alert hub,
listeners) and the FastAPI application around it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from monitor.alerts.hub import AlertEvent, Hub
from monitor.api.deps import Runtime
from monitor.api.passwords import hash_password
from monitor.api.routes import (
    alerts,
    audit,
    auth,
    cluster,
    devices,
    health,
    map,
    orders,
    proximity,
    rejected,
    reports,
    subjects,
    suspensions,
    users,
    venue,
    zone_sets,
)
from monitor.cluster import Coordinator
from monitor.config import Settings
from monitor.ingest import stream as nats_stream
from monitor.ingest.stream import Bridge, Stream
from monitor.ingest.subscriber import Message, Subscriber
from monitor.ingest.wire import SUBSCRIPTIONS
from monitor.service import Ingest, RulesChanged
from monitor.store import alerts as alert_store
from monitor.store import migrate, retention
from monitor.store import subjects as subject_store
from monitor.store import users as user_store
from monitor.store.notifications import listen
from monitor.store.pool import Pool, open_pool

__all__ = ["create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"


async def _bootstrap_admin(pool: Pool, settings: Settings) -> None:
    if settings.admin_password is None:
        return
    async with pool.connection() as conn:
        if await user_store.get(conn, "admin") is None:
            await user_store.create(
                conn,
                "admin",
                hash_password(settings.admin_password.get_secret_value()),
                "administrator",
            )
            log.info("created the administrator 'admin'")


def _fetcher(pool: Pool) -> Any:
    async def fetch_after(after: int) -> list[AlertEvent]:
        async with pool.connection() as conn:
            rows = await alert_store.events_after(conn, after, 1000)
        return [AlertEvent.of(int(r["event_id"]), r["alert"]) for r in rows]

    return fetch_after


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    await asyncio.to_thread(migrate.apply, settings.database_url)
    clustered = bool(settings.nats_servers)
    pool = await open_pool(
        settings.database_url,
        idle_in_transaction_s=settings.cluster.claim_timeout_s if clustered else None,
    )
    await _bootstrap_admin(pool, settings)
    loop = asyncio.get_running_loop()

    subscriber_box: list[Subscriber] = []

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        subscriber_box[0].publish(topic, payload, retain)

    def puback(messages: list[Message]) -> None:
        # A stream message is acknowledged to JetStream, a broker message to the broker.
        if any(m.handle is not None for m in messages):
            nats_stream.settle_later(messages, ok=True)
        subscriber_box[0].ack([m for m in messages if m.handle is None])

    bridge_box: list[Subscriber] = []

    def broker_ack(messages: list[Message]) -> None:
        # Cluster mode: the broker's messages came on the bridge's own connection.
        bridge_box[0].ack(messages)

    ingest = Ingest(settings, pool, publish, puback)
    await ingest.load()
    await ingest.sync_broker_files()
    stream: Stream | None = None
    bridge: Bridge | None = None
    coordinator: Coordinator | None = None
    if clustered and settings.ingest:
        stream = Stream(settings.nats_servers, settings.instance, settings.cluster.partitions)
        bridge = Bridge(stream, broker_ack)
        bridge_box.append(
            Subscriber(
                settings.mqtt,
                settings.cluster.bridge_client_id,
                bridge.submit,
                subscriptions=SUBSCRIPTIONS,
                ca_file=settings.mqtt_ca_file,
                log_level=settings.log_level,
            )
        )
        endpoint = settings.mqtt
        coordinator = Coordinator(
            settings.database_url,
            settings.instance,
            stream,
            ingest,
            settings.cluster.claim_timeout_s,
            bridge=bridge_box[0],
            broker_key=zlib.crc32(f"{endpoint.host}:{endpoint.port}".encode()) & 0x7FFFFFFF,
        )
        ingest.cluster = coordinator
    # This process's own connection: it publishes acks and commands, and, without
    # cluster mode, takes the devices' messages (in cluster mode the bridge does).
    subscriber = Subscriber(
        settings.mqtt,
        settings.instance,
        ingest.submit,
        subscriptions=SUBSCRIPTIONS if settings.ingest and bridge is None else (),
        ca_file=settings.mqtt_ca_file,
        log_level=settings.log_level,
    )
    subscriber_box.append(subscriber)
    hub = Hub(_fetcher(pool))
    async with pool.connection() as conn:
        start_after = await alert_store.latest_event_id(conn)

    def on_rules(payload: str | None) -> None:
        if not payload:
            return
        change, origin = RulesChanged.from_notice(payload, datetime.now(UTC))
        if origin != ingest.origin:  # the route that took the change submitted it already
            ingest.rules_changed(change)

    pending: set[asyncio.Task[None]] = set()

    def on_device(payload: str | None) -> None:
        if payload:
            task = loop.create_task(ingest.device_changed(payload))
            pending.add(task)
            task.add_done_callback(pending.discard)

    # Each subject's officer, for the live feed's caseload filter (see Runtime).
    officers: dict[str, str | None] = {}
    async with pool.connection() as conn:
        officers.update(await subject_store.officers(conn))

    async def reload_officer(subject_id: str) -> None:
        async with pool.connection() as conn:
            officer = await subject_store.officer_of(conn, subject_id)
        officers[subject_id] = officer

    def on_subject(payload: str | None) -> None:
        if payload:
            task = loop.create_task(reload_officer(payload))
            pending.add(task)
            task.add_done_callback(pending.discard)

    tasks = [
        # Only an ingesting process consumes device messages; the others (settings
        # `ingest` false) serve the API and websockets behind the same address, fed by
        # NOTIFY whichever process committed an alert.
        *([asyncio.create_task(ingest.run(), name="ingest")] if settings.ingest else []),
        asyncio.create_task(hub.run(start_after), name="hub"),
        asyncio.create_task(
            listen(
                settings.database_url,
                {
                    alert_store.CHANNEL: lambda _p: hub.notify(),
                    "rules": on_rules,
                    "zone_sets": lambda p: ingest.rules_changed(
                        RulesChanged(p or "", datetime.now(UTC), shared=True)
                    ),
                    "devices": on_device,
                    "subjects": on_subject,
                },
            ),
            name="listen",
        ),
        # The periodic work judges silence from what this process heard, so only the
        # ingesting process does it: another would find every device silent.
        *([asyncio.create_task(_ticker(ingest), name="ticker")] if settings.ingest else []),
        asyncio.create_task(_retention(settings), name="retention"),
        *(
            [asyncio.create_task(_clustered(stream, bridge, coordinator), name="cluster")]
            if stream is not None and bridge is not None and coordinator is not None
            else []
        ),
    ]
    await subscriber.start()
    app.state.runtime = Runtime(
        settings,
        pool,
        ingest,
        hub,
        subscriber.subscribed,
        officers=officers,
        cluster=coordinator,
        stream=stream,
    )
    try:
        yield
    finally:
        await subscriber.stop()
        for each in bridge_box:
            await each.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await pool.close()
        if stream is not None:
            await stream.close()


async def _clustered(stream: Stream, bridge: Bridge, coordinator: Coordinator) -> None:
    """Cluster mode's work: connect to NATS (until it answers), make sure the stream
    exists, then bridge the broker's messages into it and hold this process's share of
    the partitions."""
    delay = 0.5
    while True:
        try:
            await stream.connect()
            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("cannot reach NATS (%s); trying again in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    await stream.ensure()
    async with asyncio.TaskGroup() as group:
        group.create_task(bridge.run(), name="bridge")
        group.create_task(coordinator.run(), name="claims")


async def _retention(settings: Settings) -> None:
    """Once a day (first an hour after start): delete what the retention rules allow."""
    await asyncio.sleep(3600)
    while True:
        try:
            outcome = await asyncio.to_thread(
                retention.run, settings.database_url, datetime.now(UTC), settings.retention_days
            )
            log.info(
                "retention: %d subject(s) expired, %d chunk(s) dropped, %d row(s) deleted",
                len(outcome.expired_subjects),
                outcome.chunks_dropped,
                outcome.rows_deleted,
            )
        except Exception:
            log.exception("the retention job failed; it runs again tomorrow")
        await asyncio.sleep(24 * 3600)


async def _ticker(ingest: Ingest) -> None:
    while True:
        await asyncio.sleep(2)
        try:
            await ingest.tick()
        except Exception:
            log.exception("periodic work failed")


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="Electronic-monitoring backend: operator API",
        version="1.0",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    for module in (
        auth,
        cluster,
        users,
        subjects,
        devices,
        alerts,
        venue,
        health,
        map,
        rejected,
        audit,
        reports,
        orders,
        suspensions,
        proximity,
        zone_sets,
    ):
        app.include_router(module.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(
                {"loc": list(err.get("loc", ())), "msg": err.get("msg"), "where": where or "body"}
            )
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_r: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        index = STATIC / "index.html"
        if not index.exists():
            raise HTTPException(404, "the dashboard is not built")
        return FileResponse(index)

    @app.get("/api/v1/dashboard/config", include_in_schema=False)
    async def dashboard_config() -> dict[str, str]:
        return {"tile_url": settings.tile_url}

    if STATIC.exists():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
