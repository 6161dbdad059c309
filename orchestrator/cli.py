"""`orchestrator` command line: run the system and operate it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

import httpx
import msgspec

from api.auth import TrustedIssuer
from eventstore.audit import export_log, verify_log
from eventstore.consumers import topics_for
from eventstore.dead_letters import list_dead_letters, retry_dead_letters
from eventstore.rebuild import (
    RETIRED_GRACE,
    RebuildInProgress,
    RebuildProgress,
    builds,
    drop_retired,
    rebuild,
)
from eventstore.records import UnknownEventType
from eventstore.relay import ensure_topics
from orchestrator import bootstrap, dev_issuer, logs, migrate
from orchestrator.settings import Settings, database_engine, env


class ProgressBar:
    """One line on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, width: int = 30) -> None:
        self.label = label
        self.width = width
        self._last_draw = 0.0

    def __call__(self, progress: RebuildProgress) -> None:
        now = time.monotonic()
        finished = progress.done >= progress.total
        if not finished and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        fraction = progress.done / progress.total if progress.total else 1.0
        filled = int(fraction * self.width)
        eta = "--:--" if progress.eta_seconds is None else _clock(progress.eta_seconds)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {fraction:6.1%} "
            f"{progress.done:,}/{progress.total:,} events  {progress.rate:,.0f} ev/s  ETA {eta}")
        if finished:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    await asyncio.to_thread(migrate.upgrade, settings.database_url)
    dev = _start_dev_issuer(settings)  # development OIDC issuer (ORCH_DEV_ISSUER=1 only)
    if dev is not None:
        settings = dev[1]
    system = await bootstrap.build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if dev is not None:
            print(f"Development OIDC issuer on {dev[0].issuer} (trusted; tokens: "
                  f"orchestrator dev-token --sub alice --groups g1)", flush=True)
        if args.demo_data:
            from orchestrator import demo

            await demo.load(system)
        url = f"http://{settings.api_host}:{settings.api_port}{settings.api_base_path}"
        print(f"Orchestrator API listening on {url}/  (OpenAPI: {url}/openapi)", flush=True)
        await bootstrap.run(system, stop)
    finally:
        await system.close()
        if dev is not None:
            dev[0].stop()
    return 0


# ---- development OIDC issuer (orchestrator/dev_issuer.py): never on by default -------------


def _start_dev_issuer(settings: Settings) -> tuple[dev_issuer.DevIssuer, Settings] | None:
    """With ORCH_DEV_ISSUER=1: the issuer on loopback, trusted besides the configured ones."""
    if (env("ORCH_DEV_ISSUER", "") or "").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    if not dev_issuer.is_loopback(settings.api_host):
        raise SystemExit("ORCH_DEV_ISSUER is for development on loopback only; the API "
                         f"listens on {settings.api_host}")
    port = int(env("ORCH_DEV_ISSUER_PORT", str(dev_issuer.DEFAULT_PORT)) or 0)
    issuer = dev_issuer.DevIssuer(port).start()
    trusted = TrustedIssuer(issuer=issuer.issuer, audience=None,
                            admin_group=dev_issuer.DEV_ADMIN_GROUP)
    auth = msgspec.structs.replace(settings.auth, issuers=(*settings.auth.issuers, trusted))
    return issuer, msgspec.structs.replace(settings, auth=auth)


def _dev_token(args: argparse.Namespace) -> int:
    port = int(env("ORCH_DEV_ISSUER_PORT", str(dev_issuer.DEFAULT_PORT)) or 0)
    groups = [g for part in args.groups for g in part.split(",") if g]
    if args.admin:
        groups.append(dev_issuer.DEV_ADMIN_GROUP)
    try:
        print(dev_issuer.request_token(port, args.sub, groups=groups, scope=args.scope,
                                       lifetime_s=args.lifetime))
    except (OSError, RuntimeError, httpx.HTTPError) as error:
        print(f"orchestrator dev-token: no development issuer answered on 127.0.0.1:{port} "
              f"(start the server with ORCH_DEV_ISSUER=1): {error}", file=sys.stderr)
        return 1
    return 0


async def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    system = await bootstrap.build(settings)
    try:
        projection, categories = system.projection(args.projection)
        # The catch-up reads the topics: on a fresh install they may not exist yet.
        await ensure_topics(settings.kafka_bootstrap,
                            topics_for(settings.topic_prefix, categories),
                            settings.topic_partitions)
        result = await rebuild(
            projection, store=system.store, engine=system.engine,
            bootstrap_servers=settings.kafka_bootstrap, topic_prefix=settings.topic_prefix,
            categories=categories, registry=system.registry,
            progress=ProgressBar(f"rebuild {projection.NAME}"),
            settings=bootstrap.consumer_settings(settings), switch=not args.no_switch)
        state = "live" if result.switched else "built, not switched"
        print(f"{projection.NAME} v{result.version} is {state} "
              f"({result.replay.events:,} events replayed)")
    finally:
        await system.close()
    return 0


async def _projections(args: argparse.Namespace, settings: Settings) -> int:
    """Every build of every projection; with --drop-retired, first drop the tables of the
    builds retired over a minute ago (a rebuild keeps the build it replaced)."""
    engine = database_engine(settings.database_url)
    try:
        for projection, _ in bootstrap.PROJECTIONS:
            if args.drop_retired:
                for version in await drop_retired(engine, projection):
                    print(f"dropped the tables of {projection.NAME} v{version}")
            for build in await builds(engine, projection):
                record = build.record
                print(f"{record.projection}\tv{record.version}\t{record.state}\t"
                      f"code v{record.code_version}\t"
                      f"since {record.updated_at:%Y-%m-%d %H:%M:%S%z}\t"
                      f"{'tables' if build.has_tables else 'tables dropped'}")
    finally:
        await engine.dispose()
    return 0


async def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    system = await bootstrap.build(settings)
    try:
        if args.action == "list":
            letters = await list_dead_letters(system.engine, args.handler,
                                              stream_id=args.stream)
            if not letters:
                print("no parked events")
            for letter in letters:
                print(f"{letter.id}\t{letter.handler}\t{letter.stream_id}\tposition "
                      f"{letter.position}\t{letter.type}\t{letter.status}\t"
                      f"attempts={letter.attempts}\t{letter.last_error}")
            return 0
        report = await retry_dead_letters(system.engine, system.handler(args.handler),
                                          args.stream, registry=system.registry)
        print(f"retried: {report.succeeded} succeeded, {len(report.failed)} stream(s) "
              f"failed again, {report.still_parked} still parked")
        for stream, error in report.failed.items():
            print(f"  {stream}: {error}")
        return 0 if not report.failed else 1
    finally:
        await system.close()


async def _verify(args: argparse.Namespace, settings: Settings) -> int:
    system = await bootstrap.build(settings)
    try:
        report = await verify_log(system.store)
    finally:
        await system.close()
    if report.first_broken is None:
        print(f"hash chains intact: {report.events:,} events in {report.streams:,} streams")
        return 0
    broken = report.first_broken
    print(f"TAMPERED: {report.broken_links} broken link(s); first at log position "
          f"{broken.position}: stream {broken.stream_id} version {broken.version} "
          f"(event {broken.event_id}): {broken.problem}")
    return 1


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    system = await bootstrap.build(settings)
    # Blocking writes are fine here: this process does nothing else meanwhile.
    out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: ASYNC230
    try:
        async for line in export_log(system.store):
            out.write(line)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        await system.close()
    return 0


# ---- audit replay (issue 7)
async def _replay(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild a projection into a scratch schema as of a log position and/or a time."""
    from datetime import UTC, datetime

    from eventstore.rebuild import rebuild_to

    until = None
    if args.until:
        try:
            until = datetime.fromisoformat(args.until.replace("Z", "+00:00"))
        except ValueError:
            print(f"orchestrator replay: --until {args.until} is not RFC 3339", file=sys.stderr)
            return 2
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
    if args.position is None and until is None:
        print("orchestrator replay: give --position and/or --until", file=sys.stderr)
        return 2
    system = await bootstrap.build(settings)
    try:
        projection, categories = system.projection(args.projection)
        result = await rebuild_to(
            projection, store=system.store, engine=system.engine, schema=args.schema,
            position=args.position, until=until, registry=system.registry,
            categories=categories, progress=ProgressBar(f"replay {projection.NAME}"))
    except (ValueError, LookupError) as error:
        if isinstance(error, KeyError):
            raise
        print(f"orchestrator replay: {error}", file=sys.stderr)
        return 1
    finally:
        await system.close()
    print(f"{projection.NAME} replayed into schema {args.schema}: {result.events:,} events "
          f"up to log position {result.position.position}")
    return 0
# ---- end audit replay


# ---- provider ranking (issue 4): the AI ranker's training rows
async def _airanker_dataset(args: argparse.Namespace, settings: Settings) -> int:
    """The ``airanker-dataset`` v1.1.0 rows as JSON Lines: {"position", "key", "row"}."""
    from eventstore.projection import live_version
    from projections import airanker_dataset

    system = await bootstrap.build(settings)
    try:
        async with system.engine.connect() as conn:
            build = await live_version(conn, airanker_dataset.NAME)
            rows = (await airanker_dataset.dataset(conn, build, after_position=args.after,
                                                   limit=args.limit) if build else [])
    finally:
        await system.close()
    for position, key, row in rows:
        sys.stdout.write(msgspec.json.encode(
            {"position": position, "key": key, "row": row}).decode() + "\n")
    return 0
# ---- end provider ranking


# ---- credential store (issue 5 supporting)
async def _credentials_reseal(args: argparse.Namespace, settings: Settings) -> int:
    """After a key rotation: re-seal every credential under the current key."""
    from handlers.credentials import CredentialUnavailable

    system = await bootstrap.build(settings)
    try:
        assert system.user_credentials is not None
        store = system.user_credentials.store
        keys = store.require_keys()
        total = 0
        while (resealed := await store.reseal()) > 0:
            total += resealed
    except CredentialUnavailable as error:
        print(f"orchestrator credentials-reseal: {error}", file=sys.stderr)
        return 1
    finally:
        await system.close()
    print(f"{total} credential(s) re-sealed under key {keys.current_id!r}")
    return 0
# ---- end credential store


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run API, relay, projections and handlers")
    run.add_argument("--demo-data", action="store_true", help="load demo deployments first")
    commands.add_parser("migrate", help="apply database migrations")
    rebuild_cmd = commands.add_parser("rebuild", help="rebuild a projection from the log")
    rebuild_cmd.add_argument("projection")
    rebuild_cmd.add_argument("--no-switch", action="store_true",
                             help="build and catch up, but keep the current version live")
    builds_cmd = commands.add_parser(
        "projections", help="list every projection's builds (live, building, retired)")
    builds_cmd.add_argument(
        "--drop-retired", action="store_true",
        help=f"first drop the tables of builds retired over "
             f"{int(RETIRED_GRACE.total_seconds())} s ago")
    dead = commands.add_parser("dead-letters", help="list or retry parked handler events")
    dead.add_argument("action", choices=["list", "retry"])
    dead.add_argument("handler", nargs="?", help="handler name (required for retry)")
    dead.add_argument("--stream", help="only this stream")
    commands.add_parser("verify", help="recompute every stream's hash chain")
    export = commands.add_parser("export", help="the log as JSON Lines, with hashes")
    export.add_argument("--output", help="file to write (default: standard output)")
    # ---- audit replay (issue 7)
    replay_cmd = commands.add_parser(
        "replay", help="rebuild a projection into a scratch schema as of a position/time")
    replay_cmd.add_argument("projection")
    replay_cmd.add_argument("--schema", required=True, help="scratch schema, e.g. audit_0301")
    replay_cmd.add_argument("--position", type=int,
                            help="up to the event at this global log position")
    replay_cmd.add_argument("--until", help="up to this time (RFC 3339)")
    # ---- provider ranking (issue 4)
    dataset_cmd = commands.add_parser(
        "airanker-dataset", help="the AI ranker's training rows (airanker-dataset v1.1.0) "
                                 "as JSON Lines")
    dataset_cmd.add_argument("--after", type=int, default=0,
                             help="only rows produced after this log position")
    dataset_cmd.add_argument("--limit", type=int, default=10000)
    commands.add_parser(  # credential store (issue 5 supporting)
        "credentials-reseal",
        help="re-seal stored credentials under the current ORCH_CREDENTIAL_KEYS key")
    # ---- development OIDC issuer
    token = commands.add_parser(
        "dev-token", help="a token from the development issuer (server run with "
                          "ORCH_DEV_ISSUER=1)")
    token.add_argument("--sub", default="alice", help="subject (default alice)")
    token.add_argument("--groups", action="append", default=[],
                       help="group(s), comma-separated or repeated")
    token.add_argument("--admin", action="store_true",
                       help=f"add the admin group {dev_issuer.DEV_ADMIN_GROUP}")
    token.add_argument("--scope", default=dev_issuer.DEFAULT_SCOPE)
    token.add_argument("--lifetime", type=int, default=dev_issuer.DEFAULT_LIFETIME_S,
                       help="seconds (default 3600)")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "dev-token":  # needs no database: asks the running dev issuer
        return _dev_token(args)
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    if args.command == "migrate":
        migrate.upgrade(settings.database_url)
        print("database is at the latest migration")
        return 0
    if args.command == "dead-letters" and args.action == "retry" and not args.handler:
        print("dead-letters retry needs a handler name", file=sys.stderr)
        return 2
    action: Any = {"run": _run, "rebuild": _rebuild, "projections": _projections,
                   "dead-letters": _dead_letters,
                   "verify": _verify, "export": _export,
                   "replay": _replay,  # replay: issue 7
                   "airanker-dataset": _airanker_dataset,  # issue 4
                   "credentials-reseal": _credentials_reseal}[args.command]  # issue 5
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return int(asyncio.run(action(args, settings)))
        return 130
    except (KeyError, UnknownEventType, RebuildInProgress) as error:
        # An operator mistake or a log this code cannot read: say what, not where.
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"orchestrator {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
