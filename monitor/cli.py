"""The ``monitor`` command: parses arguments, calls a service function, prints. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from monitor.exceptions import ConfigError
from monitor.settings import Settings


def _settings(args: argparse.Namespace, **flag_to_field: str) -> Settings:
    """Settings from MONITOR_* env vars, with the given CLI flags (when set) taking precedence."""
    overrides = {
        field: getattr(args, flag)
        for flag, field in flag_to_field.items()
        if getattr(args, flag, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"MONITOR_{str(e['loc'][0]).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"bad settings: {problems}") from None
    except SettingsError as exc:  # e.g. a list variable that is not JSON
        raise ConfigError(f"bad settings: {exc}") from None


def _database_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL (env MONITOR_DATABASE_URL; default sqlite:///monitor.db)",
    )


def cmd_keygen(args: argparse.Namespace) -> None:
    from monitor.signing.keys import generate_key

    print(generate_key(Path(args.out)))


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from monitor.db.migrate import upgrade

    settings = _settings(args, database_url="database_url")
    upgrade(settings.database_url)
    print(f"database at head: {settings.database_url}")


def cmd_registry_apply(args: argparse.Namespace) -> None:
    from monitor.db.session import make_engine, session_scope
    from monitor.registry.apply import apply_registry
    from monitor.registry.schema import load_registry

    settings = _settings(args, database_url="database_url")
    registry = load_registry(Path(args.file))
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            summary = apply_registry(session, registry=registry)
    finally:
        engine.dispose()
    print(f"applied {args.file}: {summary}")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from monitor.app import create_app
    from monitor.db.migrate import require_head
    from monitor.serving import uvicorn_config

    settings = _settings(
        args,
        database_url="database_url",
        host="host",
        port="port",
        scoring_interval="scoring_interval_s",
    )
    require_head(settings.database_url)
    config = uvicorn_config(create_app(settings), settings.host, settings.port, lifespan="on")
    uvicorn.Server(config).run()


def cmd_probe(args: argparse.Namespace) -> None:
    from monitor.probe.agent import run_probe

    settings = _settings(
        args,
        collector="collector_url",
        key="key_file",
        interval="interval_s",
        timeout="rpc_timeout_s",
        concurrency="concurrency",
        metrics_port="probe_metrics_port",
        metrics_host="probe_metrics_host",
    )
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; without it, the plain loop
        asyncio.run(run_probe(settings))
    else:
        # The probe is CPU-bound on its event loop: uvloop cut the heaviest round of 2,000
        # endpoints from 13.5 s to 7.2 s (docs/performance.md, "Probe capacity").
        uvloop.run(run_probe(settings))


def cmd_simnet(args: argparse.Namespace) -> None:
    from monitor import simnet

    try:
        operators = [simnet.parse_operator_spec(s, args.chain_id) for s in args.operator or []]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    operators = operators or simnet.DEMO_OPERATORS
    chains = {c: simnet.SimChain(c, args.block_time) for c in {o.chain_id for o in operators}}
    print(
        f"simnet on http://{args.host}:{args.port}/<operator>: "
        + ", ".join(f"{o.operator_id} ({o.behaviour})" for o in operators),
        flush=True,
    )
    asyncio.run(simnet.serve_forever(operators, chains, args.host, args.port))


def cmd_demo(args: argparse.Namespace) -> None:
    from monitor.demo import run_demo

    sys.exit(run_demo(workdir=Path(args.workdir), duration_s=args.duration, check=args.check))


def cmd_verify(args: argparse.Namespace) -> None:
    from eth_utils import is_address

    from monitor.attestations.verify import describe, load_bundle, problems, verify_bundle

    if args.signer is not None and not is_address(args.signer):
        raise ConfigError(f"--signer {args.signer!r} is not an address (0x + 40 hex digits)")
    bundle = load_bundle(args.source)  # BundleError (a ConfigError): exit 2
    print(describe(bundle))
    checks = verify_bundle(bundle, signer=args.signer)
    for check in checks:
        print(check.line)
    failed = problems(checks)
    plural = "problem" if len(failed) == 1 else "problems"
    print("VERIFIED" if not failed else f"NOT VERIFIED ({len(failed)} {plural})")
    sys.exit(1 if failed else 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor",
        description="Health monitoring and SLA attestation for a decentralized RPC network.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str, fn: Callable[[argparse.Namespace], None], help: str, sub: Any = verbs
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    p = verb(
        "keygen", cmd_keygen, "Write a new probe private key (mode 0600) and print its address"
    )
    p.add_argument("--out", required=True, help="key file to create (never overwritten)")

    db = verb("db", lambda a: None, "Database schema (Alembic migrations)")
    db_verbs = db.add_subparsers(dest="db_verb", required=True, metavar="VERB")
    p = verb(
        "upgrade", cmd_db_upgrade, "Create or migrate the schema to the latest revision", db_verbs
    )
    _database_flag(p)

    reg = verb("registry", lambda a: None, "The registry of chains, operators and probes")
    reg_verbs = reg.add_subparsers(dest="registry_verb", required=True, metavar="VERB")
    p = verb(
        "apply",
        cmd_registry_apply,
        "Apply a registry YAML file (idempotent; entries "
        "missing from the file are deactivated, not deleted)",
        reg_verbs,
    )
    p.add_argument("file", help="registry YAML")
    _database_flag(p)

    p = verb("serve", cmd_serve, "Run the collector and reputation API (and the scoring job)")
    _database_flag(p)
    p.add_argument("--host", help="listen address (env MONITOR_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (env MONITOR_PORT; default 8000)")
    p.add_argument(
        "--scoring-interval",
        type=float,
        help="seconds between scoring runs (env MONITOR_SCORING_INTERVAL_S; default 15)",
    )

    p = verb("probe", cmd_probe, "Run a probe agent: check every target each round, sign, deliver")
    p.add_argument("--collector", help="collector base URL (env MONITOR_COLLECTOR_URL)")
    p.add_argument(
        "--key",
        help="private key file from `monitor keygen` (env MONITOR_KEY_FILE); "
        "the outbox lives beside it",
    )
    p.add_argument("--interval", type=float, help="seconds between rounds (default 10)")
    p.add_argument("--timeout", type=float, help="per-request timeout in seconds (default 5)")
    p.add_argument("--concurrency", type=int, help="requests in flight at most (default 256)")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (env MONITOR_PROBE_METRICS_PORT; "
        "default: off; 0: any free port, logged)",
    )
    p.add_argument(
        "--metrics-host",
        help="address the metrics port listens on (env MONITOR_PROBE_METRICS_HOST; "
        "default 127.0.0.1)",
    )

    from monitor import simnet

    p = verb("simnet", cmd_simnet, "Serve a simulated network of JSON-RPC operators on loopback")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18545)
    p.add_argument("--chain-id", type=int, default=simnet.DEMO_CHAIN_ID)
    p.add_argument("--block-time", type=float, default=simnet.DEMO_BLOCK_TIME_S)
    p.add_argument(
        "--operator",
        action="append",
        metavar="ID:BEHAVIOUR[:PARAM]",
        help=f"repeatable; behaviours: {', '.join(simnet.BEHAVIOURS)} "
        "(default: the demo's five operators)",
    )

    p = verb(
        "verify",
        cmd_verify,
        "Verify a signed SLA attestation offline: the collector's signature, the evidence root, "
        "every probe batch signature, the figures and the penalty recomputed from the evidence "
        "(exit 0 verified, 1 not verified, 2 unreadable input)",
    )
    p.add_argument(
        "source",
        metavar="FILE_OR_URL",
        help="a bundle saved from GET /v1/attestations/{id}/bundle, or the http(s) URL of "
        "/v1/attestations/{id} (its bundle is fetched)",
    )
    p.add_argument(
        "--signer",
        metavar="ADDRESS",
        help="the collector address to require (pin the one of GET /v1/identity)",
    )

    p = verb("demo", cmd_demo, "Run the whole pipeline on loopback and show a live table")
    p.add_argument("--workdir", default=".demo", help="state directory, wiped first")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the final table shows the expected ranking",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        args.fn(args)
    except ConfigError as exc:
        print(f"monitor: {exc.message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
