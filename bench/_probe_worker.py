"""One probe process for bench/probe_capacity.py: the real ProbeAgent's rounds (every check of the
registry, signing, the outbox) on a fixed interval, as ``monitor probe`` runs them (plain asyncio
loop, ``max_instances=1``: an overrunning round delays the next, never stacks).

    .venv/bin/python bench/_probe_worker.py TARGETS.json --rounds 3 --interval 10 \
        [--transport httpx|aiohttp]

Prints one JSON line per round: wall and CPU seconds of the round, the eth_blockNumber latencies
the results carry, the errors, and the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account

from monitor.checks.base import ChainRound
from monitor.checks.registry import CHECKS
from monitor.probe.agent import ProbeAgent
from monitor.probe.outbox import Outbox
from monitor.probe.targets import Targets
from monitor.rpc import RpcClient
from monitor.settings import Settings


def use_transport(agent: ProbeAgent, settings: Settings, transport: str) -> None:
    """Give the agent an operator-facing client on ``transport`` (same limits, same timeouts)."""
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        base: httpx.AsyncBaseTransport = AiohttpTransport(limits=limits)
    else:
        base = httpx.AsyncHTTPTransport(limits=limits)
    agent._operators = httpx.AsyncClient(
        transport=base, timeout=settings.rpc_timeout_s, follow_redirects=False
    )
    agent._rpc = RpcClient(
        agent._operators,
        timeout_s=settings.rpc_timeout_s,
        max_response_bytes=settings.max_response_bytes,
    )


PHASES: dict[str, float] = {}  # check name -> seconds in the current round


def time_checks() -> None:
    """Wrap every check of the registry (in place: rounds use this dict) to time its phase."""
    for name, check in list(CHECKS.items()):

        async def timed(
            round_: ChainRound, config: Any, _fn: Any = check.fn, _n: str = name
        ) -> None:
            started = time.monotonic()
            try:
                await _fn(round_, config)
            finally:
                PHASES[_n] = PHASES.get(_n, 0.0) + time.monotonic() - started

        CHECKS[name] = dataclasses.replace(check, fn=timed)


def cpu_s() -> float:
    return time.process_time()


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    settings = Settings(interval_s=args.interval, key_file=tmp / "probe.key")
    outbox = Outbox(tmp / "outbox.sqlite")
    agent = ProbeAgent(settings=settings, account=Account.create(), outbox=outbox)
    default_client = agent._operators
    use_transport(agent, settings, args.transport)
    await default_client.aclose()
    time_checks()
    agent.targets = Targets.model_validate_json(Path(args.targets).read_text())
    start = time.monotonic()
    for i in range(args.rounds):
        due = start + i * args.interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        PHASES.clear()
        started, cpu0 = time.monotonic(), cpu_s()
        await agent.round()
        wall, cpu = time.monotonic() - started, cpu_s() - cpu0
        pending = outbox.oldest(limit=1)
        results: list[dict[str, Any]] = json.loads(pending[0].body)["results"]
        outbox.acknowledge(pending[0].batch_id)
        errors = Counter(str(r["error"]) for r in results if r["error"])
        line = {
            "round": i,
            "late_start_s": started - due,
            "wall_s": wall,
            "cpu_s": cpu,
            "results": len(results),
            "latencies_us": [r["latency_us"] for r in results if r["latency_us"] is not None],
            "errors": dict(errors),
            "phases_s": {k: round(v, 3) for k, v in PHASES.items()},
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        print(json.dumps(line), flush=True)
        if wall > 2 * args.interval:
            break  # far past capacity: the caller has its answer
    await agent.aclose()
    outbox.close()
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("targets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--transport", choices=["httpx", "aiohttp"], default="httpx")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":  # what `monitor probe` runs when uvloop is installed
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
