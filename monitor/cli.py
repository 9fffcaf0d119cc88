"""The ``monitor`` command: parses arguments, calls a service function, prints. Nothing else."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
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
    from monitor.registry.governance import Governance, load_signatures, sidecar_path
    from monitor.registry.schema import load_registry

    settings = _settings(args, database_url="database_url")
    path = Path(args.file)
    registry = load_registry(path)
    signatures = load_signatures(Path(args.signatures) if args.signatures else sidecar_path(path))
    governance = Governance.configured(settings.governance_signers, settings.governance_threshold)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:  # GovernanceError: refused before any write
            summary = apply_registry(
                session,
                registry=registry,
                governance=governance,
                signatures=signatures,
                source=str(path),
            )
    finally:
        engine.dispose()
    print(f"applied {args.file}: {summary}")
    if summary.approval is not None:
        print(summary.approval.describe())


def cmd_registry_sign(args: argparse.Namespace) -> None:
    from monitor.registry.governance import sign_registry_file
    from monitor.signing.keys import load_key

    outcome = sign_registry_file(Path(args.file), load_key(Path(args.key)))
    print(f"{outcome.signer} signed registry {outcome.registry_hash}")
    print(f"{outcome.sidecar}: {len(outcome.entries)} signature(s)")
    for entry in outcome.stale:
        print(f"  {entry.signer} signed another version ({entry.registry_hash}): not counted")


def cmd_registry_hash(args: argparse.Namespace) -> None:
    from monitor.registry.canonical import canonical_registry, hash_bytes
    from monitor.registry.schema import load_registry

    body = canonical_registry(load_registry(Path(args.file)))
    print(body.decode("ascii") if args.canonical else hash_bytes(body))


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


def _json_list(text: str | None) -> bool:
    """True when unset or a JSON list of strings (what MONITOR_COLLECTOR_URLS must hold)."""
    if text is None:
        return True
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def cmd_probe(args: argparse.Namespace) -> None:
    from monitor.probe.agent import run_probe

    # The single-collector variable, no longer read: refused where it would otherwise be
    # silently replaced by the default collector.
    legacy = "MONITOR_COLLECTOR_URL" in os.environ and "MONITOR_COLLECTOR_URLS" not in os.environ
    if legacy and args.collector is None:
        raise ConfigError(
            "MONITOR_COLLECTOR_URL is no longer read: set MONITOR_COLLECTOR_URLS to a JSON list, "
            """e.g. '["https://collector.example"]', or give --collector (repeatable)"""
        )
    if args.collector is None and not _json_list(os.environ.get("MONITOR_COLLECTOR_URLS")):
        raise ConfigError(
            "bad settings: MONITOR_COLLECTOR_URLS is not a JSON list of URLs, "
            """e.g. '["https://a.example", "https://b.example"]'"""
        )
    settings = _settings(
        args,
        collector="collector_urls",
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

    sys.exit(
        run_demo(
            workdir=Path(args.workdir),
            duration_s=args.duration,
            check=args.check,
            collectors=args.collectors,
        )
    )


def cmd_verify(args: argparse.Namespace) -> None:
    from eth_utils import is_address

    from monitor.attestations.verify import describe, load_bundle, problems, verify_bundle

    if args.signer is not None and not is_address(args.signer):
        raise ConfigError(f"--signer {args.signer!r} is not an address (0x + 40 hex digits)")
    for address in args.collector or ():
        if not is_address(address):
            raise ConfigError(f"--collector {address!r} is not an address (0x + 40 hex digits)")
    if args.threshold is not None and args.threshold < 1:
        raise ConfigError("--threshold must be at least 1")
    bundle = load_bundle(args.source)  # BundleError (a ConfigError): exit 2
    print(describe(bundle))
    checks = verify_bundle(
        bundle, signer=args.signer, collectors=args.collector, threshold=args.threshold
    )
    for check in checks:
        print(check.line)
    failed = problems(checks)
    plural = "problem" if len(failed) == 1 else "problems"
    print("VERIFIED" if not failed else f"NOT VERIFIED ({len(failed)} {plural})")
    sys.exit(1 if failed else 0)


def cmd_attest_cosign(args: argparse.Namespace) -> None:
    from monitor.attestations.remote import cosign_remote
    from monitor.exceptions import CosignFailed

    token = _settings(args, admin_token="admin_token").admin_token
    if not token:
        raise ConfigError(
            "give the countersigning collector's admin token: --admin-token or MONITOR_ADMIN_TOKEN"
        )
    try:
        done = cosign_remote(args.source, args.collector, admin_token=token)
    except CosignFailed as exc:
        print(f"monitor: {exc.message}", file=sys.stderr)
        sys.exit(1)
    again = "" if done.countersigned_now else " (it had countersigned it before)"
    print(f"countersigned by {done.signer}{again}: {done.signature}")
    print(f"  served by {args.collector.rstrip('/')}/v1/attestations/{done.collector_id}")
    kept = "stored" if done.stored_now else "already stored"
    print(f"  {kept} at {done.issuer_url}: its bundle carries the cosignature")


def cmd_weights(args: argparse.Namespace) -> None:
    from monitor.client import QuorumNotReached, failure_output, fetch_weights, weights_output
    from monitor.settings import parse_window

    if args.window is not None:
        try:
            parse_window(args.window)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        result = asyncio.run(
            fetch_weights(
                args.collector,
                chain_id=args.chain_id,
                window=args.window,
                signers=args.signer,
                quorum=args.quorum,
                tolerance_bps=args.tolerance_bps,
                timeout_s=args.timeout,
                registry_hash=args.registry_hash,
            )
        )
    except QuorumNotReached as exc:
        print(failure_output(exc, as_json=args.json))
        print(f"monitor: {exc.message}", file=sys.stderr)
        sys.exit(1)
    print(weights_output(result, as_json=args.json))


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
    p.add_argument(
        "--signatures",
        help="governance signatures (default FILE.sigs.json; docs/governance.md); required to "
        "approve the file when MONITOR_GOVERNANCE_SIGNERS is set",
    )
    _database_flag(p)
    p = verb(
        "sign",
        cmd_registry_sign,
        "Sign a registry's hash as a governance signer: adds (or replaces) your signature in "
        "FILE.sigs.json; the YAML is only read",
        reg_verbs,
    )
    p.add_argument("file", help="registry YAML")
    p.add_argument("--key", required=True, help="your key file (as `monitor keygen` writes it)")
    p = verb(
        "hash",
        cmd_registry_hash,
        "Print a registry's hash (what governance signs and GET /v1/identity shows)",
        reg_verbs,
    )
    p.add_argument("file", help="registry YAML")
    p.add_argument(
        "--canonical",
        action="store_true",
        help="print the canonical JSON the hash is taken of (every default filled in) instead",
    )

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
    p.description = (
        "Run a probe agent: check every target once per interval, sign each round, deliver it "
        "to every collector. Two processes under this one command, key and outbox: a measuring "
        "process (python -m monitor.probe.pulse, started and stopped by this one) makes every "
        "call to operators, each endpoint's timed head call at a stable slot of its own in the "
        "interval, so that calls are spread evenly and timed when their answer arrives; this "
        "process judges, signs, queues and delivers. A stop (SIGINT, SIGTERM) finishes the "
        "round under way (an interval at most) before it delivers and exits. Rounds are whole: "
        "the first is the one after the targets come. See docs/checks.md and docs/operations.md."
    )
    p.add_argument(
        "--collector",
        action="append",
        metavar="URL",
        help="collector base URL; repeat it to deliver every batch to each collector "
        "(replaces env MONITOR_COLLECTOR_URLS, a JSON list; default http://127.0.0.1:8000)",
    )
    p.add_argument(
        "--key",
        help="private key file from `monitor keygen` (env MONITOR_KEY_FILE); "
        "the outbox lives beside it",
    )
    p.add_argument("--interval", type=float, help="seconds between rounds (default 10)")
    p.add_argument("--timeout", type=float, help="per-request timeout in seconds (default 5)")
    p.add_argument(
        "--concurrency",
        type=int,
        help="the checks' questions in flight at most (default 256; the timed head calls are "
        "paced, one per endpoint per interval)",
    )
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
    p.add_argument(
        "--collector",
        action="append",
        metavar="ADDRESS",
        help="repeatable: a registered collector's address; the signers (issuer and cosigners) "
        "among them are counted as registered",
    )
    p.add_argument(
        "--threshold",
        type=int,
        metavar="K",
        help="exit 1 unless at least K distinct registered collectors (--collector) signed",
    )

    attest = verb("attest", lambda a: None, "Signed SLA attestations across collectors")
    attest_verbs = attest.add_subparsers(dest="attest_verb", required=True, metavar="VERB")
    p = verb(
        "cosign",
        cmd_attest_cosign,
        "Have a collector countersign another's attestation: fetch it, ask the collector to "
        "recompute and sign it, post the signature back to the issuer (exit 0 done, 1 refused, "
        "2 usage error)",
        attest_verbs,
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="URL",
        help="the attestation at its issuer: https://issuer.example/v1/attestations/ID",
    )
    p.add_argument(
        "--collector",
        required=True,
        metavar="URL",
        help="base URL of the collector that countersigns (from its own batches)",
    )
    p.add_argument(
        "--admin-token",
        help="that collector's admin token (env MONITOR_ADMIN_TOKEN)",
    )

    p = verb(
        "weights",
        cmd_weights,
        "Ask several collectors for a chain's signed weights, verify each signature and combine "
        "them (identical, or the per-endpoint median); report who disagreed (docs/routers.md; "
        "exit 0 combined, 1 no quorum, 2 usage error)",
    )
    p.add_argument(
        "--collector", action="append", required=True, metavar="URL", help="repeat per collector"
    )
    p.add_argument("--chain-id", type=int, required=True, metavar="N", help="the chain to route")
    p.add_argument("--window", help="the scoring window to require, e.g. 5m (default: theirs)")
    p.add_argument(
        "--quorum",
        type=int,
        metavar="K",
        help="valid, agreeing answers needed (default: a majority)",
    )
    p.add_argument(
        "--signer",
        action="append",
        metavar="ADDRESS",
        help="repeatable: accept only answers these collector keys signed (pin them; without, "
        "each collector's GET /v1/identity is believed)",
    )
    p.add_argument(
        "--tolerance-bps",
        type=int,
        default=100,
        metavar="BPS",
        help="a collector further than this from the combined weight disagrees (default 100)",
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds per collector (default 5)"
    )
    p.add_argument(
        "--registry-hash",
        metavar="0x…",
        help="the registry the collectors must have applied (`monitor registry hash`); "
        "default: the one most of them applied",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = verb("demo", cmd_demo, "Run the whole pipeline on loopback and show a live table")
    p.add_argument("--workdir", default=".demo", help="state directory, wiped first")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the final table shows the expected ranking",
    )
    p.add_argument(
        "--collectors",
        type=int,
        default=1,
        metavar="N",
        help="independent collectors syncing from each other (default 1; 2 shows issue 8: "
        "weights combined from both, the attestation co-signed)",
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
