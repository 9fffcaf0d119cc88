"""The probe agent: fetch targets, run rounds, sign, queue, deliver.

``monitor probe`` runs paced rounds (:meth:`ProbeAgent.run_paced`, monitor.probe.paced): its
measuring process visits each endpoint at its own slot of every interval, and each round,
judged once its window has closed, is signed as one batch. :meth:`ProbeAgent.round` is a round
on demand, every endpoint at once (monitor.probe.rounds). Every signed batch goes to each
configured collector; delivery is one task per collector, with its own backoff and its own queue
in the outbox, so a collector that is down or slow never delays a round nor the other collectors,
and a batch stays on disk until every collector has acknowledged or refused it for good.
Targets come from the collectors in their configured order, the first that answers winning (they
apply the same registry, so the endpoint ids are the same everywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sqlite3
import time
from collections import Counter
from datetime import UTC
from typing import Any

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from eth_account.signers.local import LocalAccount

from monitor.checks.base import ChainMemory
from monitor.exceptions import ConfigError
from monitor.ingest.schemas import ProbeResult
from monitor.probe.metrics import MetricsServer, ProbeMetrics
from monitor.probe.outbox import Outbox
from monitor.probe.paced import PacedRounds, PulseProcess
from monitor.probe.rounds import CheckOutcomes, run_round
from monitor.probe.schedule import Schedule
from monitor.probe.targets import Targets
from monitor.rpc import RpcClient
from monitor.safejson import loads
from monitor.settings import Settings
from monitor.signing.eip712 import auth_headers, sign_batch
from monitor.signing.keys import load_key

log = logging.getLogger("monitor.probe")

TARGETS_PATH = "/v1/targets"
BATCHES_PATH = "/v1/batches"
MAX_BACKOFF_S = 15.0  # a collector back from an outage hears from every probe within ~18 s
# A collector that hangs holds up the next one in the targets order this long at most (a first
# round waits for targets; later refreshes run beside the rounds).
TARGETS_TIMEOUT_S = 10.0
# On a stop, the last delivery pass (all collectors at once) takes this long at most.
STOP_FLUSH_S = 5.0


# Refusals that a later attempt can overcome: the probe's clock ran ahead, or the registry that
# lists this probe has not been applied yet. Anything else refused is set aside for good.
RETRYABLE_CODES = {"batch_from_future", "unknown_probe"}


# A collector's answer, however hostile, must not crash the probe and stop its rounds and its
# delivery to the other collectors (monitor.safejson): its answers nest a few levels at most.
MAX_ANSWER_DEPTH = 32


def _answer(response: httpx.Response) -> Any:
    return loads(response.content, max_depth=MAX_ANSWER_DEPTH)


def _worth_retrying(response: httpx.Response) -> bool:
    if response.status_code in (408, 429) or response.status_code >= 500:
        return True
    try:
        code = _answer(response)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return code in RETRYABLE_CODES


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _duplicate(response: httpx.Response) -> bool:
    try:
        return _answer(response)["duplicate"] is True
    except (ValueError, KeyError, TypeError):
        return False


class ProbeAgent:
    def __init__(
        self,
        *,
        settings: Settings,
        account: LocalAccount,
        outbox: Outbox,
        metrics: ProbeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.account = account
        self.outbox = outbox
        self.collectors: tuple[str, ...] = tuple(settings.collector_urls)
        outbox.configure(self.collectors)
        self.metrics = metrics or ProbeMetrics(collectors=self.collectors, outbox=outbox.path)
        self.targets: Targets | None = None
        self._targets_body = b""
        # A client (and connection pool) per collector: a slow one holds only its own.
        self._clients = {
            url: httpx.AsyncClient(base_url=url, timeout=30.0) for url in self.collectors
        }
        self._rpc = RpcClient(
            timeout_s=settings.rpc_timeout_s, max_response_bytes=settings.max_response_bytes
        )
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        self._memory: dict[int, ChainMemory] = {}  # per chain: check cadence, head history
        self._new_batch = {url: asyncio.Event() for url in self.collectors}
        self._round_task: asyncio.Task[object] | None = None
        self._refresh_task: asyncio.Task[object] | None = None
        self._stopping = False

    async def refresh_targets(self) -> bool:
        """Targets from the first collector, in configured order, that serves them."""
        self._refresh_task = asyncio.current_task()
        try:
            for url, client in self._clients.items():
                headers = auth_headers(self.account, method="GET", path=TARGETS_PATH)
                try:
                    response = await client.get(
                        TARGETS_PATH, headers=headers, timeout=TARGETS_TIMEOUT_S
                    )
                    response.raise_for_status()
                    if self.targets is not None and response.content == self._targets_body:
                        return True  # unchanged: the rounds keep the targets they have
                    # pydantic's own parser: it refuses deep nesting without recursing
                    self.targets = Targets.model_validate_json(response.content)
                    self._targets_body = response.content
                except (httpx.HTTPError, ValueError) as exc:  # ValueError: not JSON, not targets
                    log.warning("targets from %s: %s", url, _describe(exc))
                    continue
                return True
            log.warning("targets: no collector served them; keeping the last list")
            return False
        except asyncio.CancelledError:
            self._absorb_stop("targets refresh")
            return False
        finally:
            self._refresh_task = None

    async def round(self) -> str | None:
        """One one-shot round (monitor.probe.rounds): check, sign, queue. Returns the batch id,
        or None with no targets yet. ``monitor probe`` runs paced rounds instead
        (:meth:`run_paced`); this is a round on demand."""
        self._round_task = asyncio.current_task()
        try:
            if self.targets is None and not await self.refresh_targets():
                log.warning("round skipped: no targets yet")
                return None
            assert self.targets is not None
            outcomes: CheckOutcomes = Counter()
            started = time.perf_counter()
            results = await run_round(
                self.targets,
                rpc=self._rpc,
                semaphore=self._semaphore,
                memory=self._memory,
                outcomes=outcomes,
            )
            batch_id = self.queue(
                results, duration_s=time.perf_counter() - started, outcomes=outcomes
            )
        except asyncio.CancelledError:
            self._absorb_stop("round")
            return None
        finally:
            self._round_task = None
        return batch_id

    def queue(
        self, results: list[ProbeResult], *, duration_s: float, outcomes: CheckOutcomes
    ) -> str:
        """Sign a round's results as one batch and queue it for every collector."""
        batch = sign_batch(self.account, results)
        # Queued before any attempt to send: from here on the round cannot be lost.
        self.outbox.put(batch.message.batchId, batch.model_dump_json().encode())
        self.metrics.round_done(duration_s=duration_s, results=results, outcomes=outcomes)
        for event in self._new_batch.values():
            event.set()
        return batch.message.batchId

    @property
    def schedule(self) -> Schedule:
        """When this probe visits each endpoint: its address seeds the offsets."""
        return Schedule(self.settings.interval_s, bytes.fromhex(self.account.address[2:]))

    async def run_paced(self, stop: asyncio.Event) -> None:
        """``monitor probe``'s rounds until ``stop``: the measuring process makes the timed head
        calls at their slots, the paced rounds ask and judge, each judged round is queued."""
        schedule = self.schedule
        settings = self.settings

        def on_round(
            number: int, results: list[ProbeResult], outcomes: CheckOutcomes, missed: int
        ) -> None:
            self.metrics.visits_missed.inc(missed)
            if missed:
                log.warning("round %s: %d visits missed (the probe fell behind)", number, missed)
            if results:
                self.queue(
                    results,
                    duration_s=time.time() - schedule.start(number),
                    outcomes=outcomes,
                )

        pulse = PulseProcess()
        paced = PacedRounds(
            schedule=schedule,
            call=pulse.call,
            concurrency=settings.concurrency,
            # a head call made at the window's end is answered or timed out by then, and so
            # is one question after it
            grace_s=2 * settings.rpc_timeout_s + 1.0,
            on_round=on_round,
            memory=self._memory,
        )
        configured: list[Targets | None] = [None]

        def apply_targets() -> None:
            if self.targets is None or self.targets is configured[0]:
                return
            configured[0] = self.targets
            paced.set_targets(self.targets)
            endpoints = [[e.endpoint_id, e.url] for c in self.targets.chains for e in c.endpoints]
            pulse.configure(
                {
                    "interval_s": settings.interval_s,
                    "seed": self.account.address[2:],
                    "timeout_s": settings.rpc_timeout_s,
                    "max_bytes": settings.max_response_bytes,
                    "max_late_s": min(0.5, settings.interval_s / 10),
                    "endpoints": endpoints,
                }
            )

        async def read() -> None:
            while not stop.is_set():
                configured[0] = None
                await pulse.start()
                apply_targets()
                async for sample in pulse.samples():
                    paced.take(sample)
                if not stop.is_set():
                    log.error(
                        "the measuring process ended (exit %s); restarting it",
                        pulse.proc.returncode if pulse.proc else None,
                    )
                    await asyncio.sleep(1.0)

        reader = asyncio.create_task(read(), name="pulse reader")
        refresh: asyncio.Task[bool] | None = None
        first_round: int | None = None  # the first round visited: the one after targets came
        try:
            while not stop.is_set():
                if self.targets is None and (refresh is None or refresh.done()):
                    refresh = asyncio.create_task(self.refresh_targets())
                if pulse.proc is not None:
                    apply_targets()
                    if first_round is None and configured[0] is not None:
                        first_round = schedule.round_of(time.time()) + 1
                paced.close_due(time.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await stop.wait()
            # A stop finishes the round under way (an interval at most), so that every batch
            # is a whole round; none is begun after it.
            paced.last_round = schedule.round_of(time.time())
            if first_round is not None and paced.last_round >= first_round:
                log.info("stop: finishing round %s", paced.last_round)
                deadline = schedule.start(paced.last_round + 1) + paced.grace_s + 1.0
                while not paced.judged(paced.last_round) and time.time() < deadline:
                    paced.close_due(time.time())
                    await asyncio.sleep(0.05)
        finally:
            await pulse.stop()  # no visit starts from here on
            reader.cancel()
            await asyncio.wait({reader}, timeout=1.0)
            # The round in flight keeps what it measured: its questions are answered (bounded)
            # and it is judged and queued as it stands.
            await paced.drain(settings.rpc_timeout_s + 1.0)
            paced.close_all()

    def _absorb_stop(self, what: str) -> None:
        """A cancellation from our own stop ends the job quietly; any other is re-raised."""
        task = asyncio.current_task()
        if not self._stopping or task is None:
            raise asyncio.CancelledError
        task.uncancel()
        log.info("%s cut short by the stop; nothing of it was queued", what)

    async def stop_jobs(self, timeout_s: float) -> None:
        """Let a round in flight finish (bounded), so a stop keeps its batch; past the bound,
        cancel it before it signs anything rather than let it run on closed clients. A targets
        refresh in flight is cancelled: the next start fetches them again."""
        self._stopping = True
        if self._round_task is not None:
            await asyncio.wait({self._round_task}, timeout=timeout_s)
        for task in (self._round_task, self._refresh_task):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)

    async def flush(self, *, timeout_s: float) -> None:
        """One last pass over every collector's queue (bounded): the round a stop let finish
        reaches the collectors that are up now rather than at the next start. A batch whose
        earlier send the stop cut off may be sent twice; the collector answers it as a
        duplicate."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.deliver_pending()
        except TimeoutError:
            log.info("stop: last delivery pass cut off after %g s", timeout_s)
        except Exception:  # e.g. the outbox file: the stop goes on, the batches stay on disk
            log.exception("stop: last delivery pass failed")

    async def deliver_pending(self, *, collector: str | None = None) -> bool:
        """Send what the outbox holds for ``collector`` (None: each, concurrently), oldest
        first. False when a collector must be retried."""
        if collector is None:
            done = await asyncio.gather(*(self._deliver(url) for url in self.collectors))
            return all(done)
        return await self._deliver(collector)

    async def _deliver(self, url: str) -> bool:
        client = self._clients[url]
        count = self.metrics.deliveries
        while pending := self.outbox.oldest(collector=url):
            for item in pending:
                try:
                    response = await client.post(
                        BATCHES_PATH,
                        content=item.body,
                        headers={"content-type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    log.info("delivery to %s: unreachable (%s)", url, _describe(exc))
                    self.outbox.attempted(item.batch_id, collector=url)
                    count.labels(url, "retry").inc()
                    return False
                status = response.status_code
                if status == 200:
                    self.outbox.acknowledge(item.batch_id, collector=url)
                    count.labels(url, "duplicate" if _duplicate(response) else "accepted").inc()
                elif _worth_retrying(response):
                    log.warning(
                        "delivery to %s: HTTP %s %s; will retry", url, status, response.text[:300]
                    )
                    self.outbox.attempted(item.batch_id, collector=url)
                    count.labels(url, "retry").inc()
                    return False
                else:  # refused for good by this collector: kept on disk, out of its queue
                    log.error(
                        "delivery to %s: batch %s refused: %s",
                        url,
                        item.batch_id,
                        response.text[:300],
                    )
                    self.outbox.reject(
                        item.batch_id, collector=url, status=status, reason=response.text[:2000]
                    )
                    count.labels(url, "rejected").inc()
        return True

    async def delivery_loop(self, collector: str) -> None:
        """Deliver to one collector for ever, with a backoff of its own."""
        new_batch = self._new_batch[collector]
        failures = 0
        while True:
            new_batch.clear()  # before reading the queue: a batch queued meanwhile wakes us
            try:
                delivered = await self._deliver(collector)
            except Exception:  # e.g. the outbox file: keep trying, never stop delivering
                log.exception("delivery to %s: unexpected error", collector)
                delivered = False
            if delivered:
                failures = 0
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await new_batch.wait()
            else:
                failures += 1
                delay = min(MAX_BACKOFF_S, 0.5 * 2**failures) * random.uniform(0.8, 1.2)
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._rpc.aclose()
        for client in self._clients.values():
            await client.aclose()


async def run_probe(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``): the long-running ``monitor probe``."""
    account = load_key(settings.key_file)
    outbox_file = settings.key_file.with_name(settings.key_file.name + ".outbox.sqlite")
    try:
        outbox = Outbox(outbox_file)
    except sqlite3.DatabaseError as exc:  # not an outbox, or one from a newer probe
        raise ConfigError(f"outbox {outbox_file}: {exc}") from None
    try:
        agent = ProbeAgent(settings=settings, account=account, outbox=outbox)
    except BaseException:
        outbox.close()
        raise
    metrics_server = None
    if settings.probe_metrics_port is not None:
        try:
            metrics_server = MetricsServer(
                agent.metrics.registry,
                host=settings.probe_metrics_host,
                port=settings.probe_metrics_port,
            )
        except ConfigError:
            await agent.aclose()
            outbox.close()
            raise
        log.info("probe metrics on %s", metrics_server.url)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    log.info(
        "probe %s -> %s, every %g s, outbox %s (%s)",
        account.address,
        ", ".join(agent.collectors),
        settings.interval_s,
        outbox.path,
        ", ".join(f"{outbox.depth(collector=url)} pending for {url}" for url in agent.collectors),
    )
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(
        agent.refresh_targets,
        "interval",
        seconds=settings.targets_refresh_s,
        max_instances=1,
        coalesce=True,
        id="targets",
    )
    deliveries = [
        asyncio.create_task(agent.delivery_loop(url), name=f"delivery to {url}")
        for url in agent.collectors
    ]
    scheduler.start()
    rounds = asyncio.create_task(agent.run_paced(stop), name="rounds")
    try:
        await asyncio.wait(
            {rounds, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stop.set()
        scheduler.pause()
        await agent.stop_jobs(timeout_s=1.0)  # a targets refresh in flight: cancelled
        # The rounds in flight are judged and queued with what they measured.
        await asyncio.wait({rounds}, timeout=settings.interval_s + 2 * settings.rpc_timeout_s + 10)
        scheduler.shutdown(wait=False)
        for task in deliveries:
            task.cancel()
        await asyncio.wait(deliveries, timeout=5.0)
        await agent.flush(timeout_s=STOP_FLUSH_S)
        await agent.aclose()
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.stop)  # its port is closed on return
        log.info("probe stopped; %d batches left in the outbox", outbox.depth())
        outbox.close()
        if rounds.done() and not rounds.cancelled() and rounds.exception() is not None:
            raise rounds.exception()  # type: ignore[misc]
