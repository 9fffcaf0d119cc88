"""The probe agent: fetch targets, run rounds on a schedule, sign, queue, deliver.

Rounds run under APScheduler with ``max_instances=1`` and ``coalesce``: a round that overruns its
interval makes the next one wait (skipped, not stacked). Delivery is its own task, so a collector
that is down or slow never delays a round; every batch sits in the outbox until acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from datetime import UTC, datetime

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from eth_account.signers.local import LocalAccount

from monitor.probe.outbox import Outbox
from monitor.probe.rounds import run_round
from monitor.probe.targets import Targets
from monitor.rpc import RpcClient
from monitor.settings import Settings
from monitor.signing.eip712 import auth_headers, sign_batch
from monitor.signing.keys import load_key

log = logging.getLogger("monitor.probe")

TARGETS_PATH = "/v1/targets"
BATCHES_PATH = "/v1/batches"
MAX_BACKOFF_S = 60.0


class ProbeAgent:
    def __init__(self, *, settings: Settings, account: LocalAccount, outbox: Outbox) -> None:
        self.settings = settings
        self.account = account
        self.outbox = outbox
        self.targets: Targets | None = None
        self.rounds_done = 0
        limits = httpx.Limits(
            max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
        )
        self._operators = httpx.AsyncClient(
            limits=limits, timeout=settings.rpc_timeout_s, follow_redirects=False
        )
        self._collector = httpx.AsyncClient(
            base_url=settings.collector_url.rstrip("/"), timeout=30.0
        )
        self._rpc = RpcClient(
            self._operators,
            timeout_s=settings.rpc_timeout_s,
            max_response_bytes=settings.max_response_bytes,
        )
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._new_batch = asyncio.Event()

    async def refresh_targets(self) -> bool:
        headers = auth_headers(self.account, method="GET", path=TARGETS_PATH)
        try:
            response = await self._collector.get(TARGETS_PATH, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("targets: collector unreachable (%s); keeping the last list", exc)
            return False
        if response.status_code != 200:
            log.warning("targets: HTTP %s %s", response.status_code, response.text[:300])
            return False
        self.targets = Targets.model_validate(response.json())
        return True

    async def round(self) -> str | None:
        """One round: check, sign, queue. Returns the batch id, or None with no targets yet."""
        if self.targets is None and not await self.refresh_targets():
            log.warning("round skipped: no targets yet")
            return None
        assert self.targets is not None
        results = await run_round(self.targets, rpc=self._rpc, semaphore=self._semaphore)
        batch = sign_batch(self.account, results)
        self.outbox.put(batch.message.batchId, batch.model_dump_json().encode())
        self.rounds_done += 1
        self._new_batch.set()
        return batch.message.batchId

    async def deliver_pending(self) -> bool:
        """Send what the outbox holds, oldest first. False when the collector must be retried."""
        while pending := self.outbox.oldest():
            for item in pending:
                try:
                    response = await self._collector.post(
                        BATCHES_PATH,
                        content=item.body,
                        headers={"content-type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    log.info("delivery: collector unreachable (%s)", type(exc).__name__)
                    self.outbox.attempted(item.batch_id)
                    return False
                status = response.status_code
                if status == 200:
                    self.outbox.acknowledge(item.batch_id)
                elif status in (408, 429) or status >= 500:
                    self.outbox.attempted(item.batch_id)
                    return False
                else:  # refused for good: keep it on disk, out of the queue's way
                    log.error("delivery: batch %s refused: %s", item.batch_id, response.text[:300])
                    self.outbox.reject(item.batch_id, status=status, reason=response.text[:2000])
        return True

    async def delivery_loop(self) -> None:
        failures = 0
        while True:
            if await self.deliver_pending():
                failures = 0
                self._new_batch.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_batch.wait(), timeout=5.0)
            else:
                failures += 1
                delay = min(MAX_BACKOFF_S, 0.5 * 2**failures) * random.uniform(0.8, 1.2)
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._operators.aclose()
        await self._collector.aclose()


async def run_probe(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``): the long-running ``monitor probe``."""
    account = load_key(settings.key_file)
    outbox = Outbox(settings.key_file.with_name(settings.key_file.name + ".outbox.sqlite"))
    agent = ProbeAgent(settings=settings, account=account, outbox=outbox)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    log.info(
        "probe %s -> %s, every %g s, outbox %s (%d pending)",
        account.address,
        settings.collector_url,
        settings.interval_s,
        outbox.path,
        outbox.depth(),
    )
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        agent.round,
        "interval",
        seconds=settings.interval_s,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        id="round",
    )
    scheduler.add_job(
        agent.refresh_targets,
        "interval",
        seconds=settings.targets_refresh_s,
        max_instances=1,
        coalesce=True,
        id="targets",
    )
    delivery = asyncio.create_task(agent.delivery_loop())
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
        await agent.aclose()
        log.info("probe stopped; %d batches left in the outbox", outbox.depth())
        outbox.close()
