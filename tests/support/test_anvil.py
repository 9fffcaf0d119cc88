"""The anvil helpers themselves: honest nodes agree block by block, and each fault looks real."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.anvil import AnvilNode, ChainDriver, anvil_available, anvil_nodes

pytestmark = pytest.mark.skipif(not anvil_available(), reason="anvil not installed: make test")


def test_driver_keeps_nodes_on_one_chain_and_faults_behave() -> None:
    nodes = (AnvilNode("a"), AnvilNode("b"), AnvilNode("c"), AnvilNode("w", chain_id=999))
    with anvil_nodes(*nodes) as (a, b, c, w):
        driver = ChainDriver([a, b, c], block_time_s=0.3).start(warmup_blocks=6)
        try:
            assert int(w.rpc("eth_chainId"), 16) == 999
            # Independent processes, identical blocks: identical hashes.
            height = min(a.head(), b.head(), c.head())
            assert height >= 6
            assert a.block_hash(height) == b.block_hash(height) == c.block_hash(height)

            driver.stall(c)
            stalled_at = c.head()
            deadline = time.monotonic() + 10
            while a.head() < stalled_at + 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert c.head() == stalled_at < a.head()
            driver.resume(c)
            assert c.head() >= stalled_at + 2
            assert c.block_hash(c.head() - 1) == a.block_hash(c.head() - 1)

            driver.stall(b)  # keep b still while it is reorganised
            b.reorg(2)
            top = b.head()
            assert b.block_hash(top) != a.block_hash(top)
            assert b.block_hash(top - 2) == a.block_hash(top - 2)

            fork = AnvilNode("fork", fork_url=a.url).start()
            try:
                fork.mine(driver.timestamp(fork.head() + 1) + 7)  # its own block
                mined = fork.head()
                deadline = time.monotonic() + 10
                while a.head() < mined and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert fork.block_hash(mined) != a.block_hash(mined)
            finally:
                fork.stop()

            a.pause()
            with pytest.raises(httpx.TimeoutException):
                a.rpc("eth_blockNumber", timeout=0.3)
            a.resume_process()
            assert a.head() >= height
        finally:
            driver.stop()
    assert all(node.process is None for node in (a, b, c, w))
