"""Real Ethereum nodes (anvil) as operators, for the end-to-end tests.

Independent anvil processes are independent chains, so honest operators are kept on ONE chain by a
``ChainDriver``: every block is mined on every node that follows the chain, with the same
timestamp (``evm_setNextBlockTimestamp`` + ``evm_mine``). Identical genesis (same ``--timestamp``,
chain id and accounts) plus identical empty blocks give identical hashes, node after node.

What a real operator can show, with anvil's own RPC:

- stalled: the driver stops mining it (its head freezes); ``resume`` catches it up block by block
  with the chain's own timestamps, so its hashes agree again;
- behind and catching up: ``lag`` it, then ``resume``;
- reorg: ``anvil_reorg(depth, [])`` replaces its last ``depth`` blocks with others;
- diverged fork: a node started with ``--fork-url`` of a chain node, mining its own blocks;
- wrong chain: a node started with another ``--chain-id``;
- hung: SIGSTOP / SIGCONT on the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ANVIL = PROJECT_ROOT / "tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
GENESIS_TIMESTAMP = 1_700_000_000
STARTUP_TIMEOUT_S = 10.0


def anvil_available() -> bool:
    return ANVIL.is_file() and os.access(ANVIL, os.X_OK)


def require_anvil() -> Path:
    if not anvil_available():
        raise RuntimeError(
            f"{ANVIL} is missing: run `make test` (it installs anvil with npm ci in tools/)"
        )
    return ANVIL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RpcFailed(RuntimeError):
    pass


@dataclass
class AnvilNode:
    """One anvil process on a free loopback port; stopped (and SIGCONT'ed first) by ``stop``."""

    name: str
    chain_id: int = 31337
    fork_url: str | None = None
    log_dir: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AnvilNode:
        args = [
            str(require_anvil()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--no-mining",
            "--silent",
        ]
        if self.fork_url is None:
            args += ["--timestamp", str(GENESIS_TIMESTAMP)]
        else:
            args += ["--fork-url", self.fork_url]
        log = (self.log_dir / f"anvil-{self.name}.log").open("wb") if self.log_dir else None
        try:
            self.process = subprocess.Popen(
                args, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
        finally:
            if log is not None:
                log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                self.rpc("eth_chainId")
                return self
            except (httpx.HTTPError, RpcFailed):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"anvil {self.name} did not start on {self.url}") from None
                time.sleep(0.05)

    def rpc(self, method: str, *params: Any, timeout: float = 5.0) -> Any:
        response = httpx.post(
            self.url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=timeout,
        )
        body = response.json()
        if "error" in body:
            raise RpcFailed(f"{self.name} {method}: {body['error']}")
        return body["result"]

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block_hash(self, height: int) -> str:
        return str(self.rpc("eth_getBlockByNumber", hex(height), False)["hash"])

    def mine(self, timestamp: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", timestamp)
        self.rpc("evm_mine")

    def reorg(self, depth: int) -> None:
        """Replace the last ``depth`` blocks with blocks of other content (anvil_reorg)."""
        self.rpc("anvil_reorg", depth, [])

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume_process(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


class ChainDriver:
    """Mines one chain on the nodes that follow it, every ``block_time_s``, in a thread.

    ``height`` is the chain's head; block ``h`` has timestamp ``GENESIS_TIMESTAMP + h *
    block_time`` (whole seconds) on every node, so honest nodes agree on every hash.
    """

    def __init__(self, nodes: list[AnvilNode], *, block_time_s: float = 1.0) -> None:
        self.nodes = list(nodes)
        self.block_time_s = block_time_s
        self.height = 0
        self.following = {node.name: True for node in nodes}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def timestamp(self, height: int) -> int:
        return GENESIS_TIMESTAMP + height * max(1, round(self.block_time_s))

    def mine_next(self) -> None:
        with self._lock:
            self.height += 1
            for node in self.nodes:
                if self.following[node.name]:
                    self._mine_on(node, self.height)

    def _mine_on(self, node: AnvilNode, height: int) -> None:
        try:
            node.mine(self.timestamp(height))
        except (httpx.HTTPError, RpcFailed) as exc:  # a hung node: it just misses the block
            self.errors.append(f"{node.name}@{height}: {exc}")
            self.following[node.name] = False

    def stall(self, node: AnvilNode) -> None:
        with self._lock:
            self.following[node.name] = False

    def resume(self, node: AnvilNode) -> None:
        """Catch ``node`` up to the chain's head with the chain's own blocks, then follow again."""
        with self._lock:
            for height in range(node.head() + 1, self.height + 1):
                node.mine(self.timestamp(height))
            self.following[node.name] = True

    def start(self, *, warmup_blocks: int = 0) -> ChainDriver:
        for _ in range(warmup_blocks):
            self.mine_next()
        self._thread = threading.Thread(target=self._run, name="chain-driver", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.block_time_s):
            self.mine_next()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextlib.contextmanager
def anvil_nodes(*nodes: AnvilNode) -> Iterator[list[AnvilNode]]:
    """Start the nodes; stop every one of them on the way out, whatever happened."""
    started: list[AnvilNode] = []
    try:
        for node in nodes:
            started.append(node.start())
        yield started
    finally:
        for node in started:
            node.stop()


def write_registry(
    path: Path,
    operators: Mapping[str, str],
    probe_addresses: Sequence[str],
    *,
    chain_id: int = 31337,
    block_time_s: float = 1,
    confirmations: int = 3,
    chain_options: Mapping[str, Any] | None = None,
) -> Path:
    """A registry YAML for one anvil chain: one operator per ``{id: url}``, the given probes;
    ``chain_options`` (e.g. ``checks``, ``scoring``) go into the chain's entry."""
    document = {
        "chains": [
            {
                "chain_id": chain_id,
                "name": "anvil",
                "block_time_s": block_time_s,
                "confirmations": confirmations,
                "sla": {"availability": 0.99, "latency_p95_ms": 250, "max_lag_blocks": 2},
                **(chain_options or {}),
            }
        ],
        "operators": [
            {"id": op, "name": f"Operator {op}", "endpoints": [{"chain_id": chain_id, "url": url}]}
            for op, url in operators.items()
        ],
        "probes": [
            {"address": address, "name": f"probe-{i}", "region": f"region-{i}"}
            for i, address in enumerate(probe_addresses)
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
