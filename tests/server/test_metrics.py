"""/metrics reports the memory the server holds: the KV pool it reserved (blocks x block bytes,
resident from start-up), the weights, and the process's resident set; a pool that cannot fit stops
``grokd serve`` at start-up with the sizes named."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grokd.server.config import ServerConfig
from tests.server.serving import REPO, LiveServer, free_port, start_server


@pytest.fixture(scope="module")
def server(grok1_tiny_dir) -> LiveServer:
    live = start_server(ServerConfig(model=str(grok1_tiny_dir), dtype="float32", max_num_seqs=4))
    yield live
    live.stop()


def _gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_report_the_reserved_pool_weights_and_resident_memory(server: LiveServer) -> None:
    g = _gauges(server.url)
    kv = server.state.engine.kv_cache
    assert g["grokd_kv_block_bytes"] == kv.bytes_per_block > 0
    assert g["grokd_kv_pool_bytes"] == g["grokd_kv_blocks_total"] * g["grokd_kv_block_bytes"] == kv.num_bytes
    assert g["grokd_weights_bytes"] == server.state.engine.stats().weights_bytes > 0
    # the pool is resident from start-up, so the process holds at least it and the weights
    assert g["process_resident_memory_bytes"] >= g["grokd_kv_pool_bytes"] + g["grokd_weights_bytes"]


def test_an_impossible_kv_cache_memory_fails_at_start_up_naming_the_sizes(grok1_tiny_dir) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "grokd.server.cli", "serve", "--model", str(grok1_tiny_dir), "--dtype", "float32",
         "--kv-cache-memory", "64T", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "kv_cache_memory: a KV pool of" in out and "= 67108864 MiB" in out and "does not fit" in out, out[-2000:]
    assert "MiB available" in out
