"""``grokd serve --tensor-parallel-size 2`` on the golden grok1-tiny fixture, as a real subprocess
on 127.0.0.1 that spawns its second rank itself (gloo on the CPU): /v1/completions reproduces
reference.json's greedy tokens and prompt logprobs, concurrent requests each get their
single-rank output, SIGTERM stops both ranks cleanly, and a worker that is killed makes the
server fail its in-flight request with 503 and exit non-zero instead of hanging."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from tests.server.serving import REPO, ServerProcess, free_port, start_process, wait_ready, wait_until

TP_ARGS = ["--dtype", "float32", "--tensor-parallel-size", "2", "--device", "cpu", "--log-level", "info"]


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (Linux: the parent id in each ``/proc/N/stat``)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def worker_pid(server: ServerProcess) -> int:
    """The spawned rank 1: the one child that runs ``multiprocessing.spawn`` (the others, if any,
    are spawn's resource tracker)."""
    for pid in children(server.proc.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if "spawn_main" in cmdline:
            return pid
    raise AssertionError(f"no spawned worker among {children(server.proc.pid)}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def server(grok1_tiny_dir: Path) -> ServerProcess:
    srv = start_process(["--model", str(grok1_tiny_dir), *TP_ARGS], timeout=240)
    yield srv
    srv.stop()


def _complete(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json={"model": "grok1-tiny", **body}, timeout=120)


def test_tp2_reproduces_reference(server: ServerProcess, grok1_tiny_reference: dict) -> None:
    steps = grok1_tiny_reference["greedy_steps"]
    for case in grok1_tiny_reference["fp32"]["single"]:
        prompt, logits, greedy = case["prompt"], case["logits"], case["greedy"]
        r = _complete(server.url, {"prompt": prompt, "max_tokens": steps, "temperature": 0, "echo": True,
                                   "logprobs": 5, "return_tokens_as_token_ids": True, "ignore_eos": True})
        assert r.status_code == 200, r.text
        lp = r.json()["choices"][0]["logprobs"]
        for i in range(1, len(prompt)):
            ref = torch.log_softmax(torch.tensor(logits[i - 1], dtype=torch.float64), dim=-1)
            assert abs(lp["token_logprobs"][i] - ref[prompt[i]].item()) < 2e-3, i
            top = torch.topk(ref, 5)
            for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                assert abs(lp["top_logprobs"][i][f"token_id:{t}"] - v) < 2e-3
        assert [int(t.split(":")[1]) for t in lp["tokens"][len(prompt):]] == greedy


def test_tp2_staggered_batch_of_32_each_get_their_output(server: ServerProcess, grok1_tiny_reference: dict) -> None:
    """32 requests arriving 20 ms apart with different lengths, so each step mixes new prefills
    with running decodes and finished rows leave the batch: every request still decodes exactly
    its single-rank greedy tokens (the reference's, cut at its own ``max_tokens``)."""
    steps = grok1_tiny_reference["greedy_steps"]
    refs = grok1_tiny_reference["fp32"]["single"]
    cases = [(refs[i % len(refs)], 1 + i % steps) for i in range(32)]

    def run(i: int) -> httpx.Response:
        time.sleep(0.02 * i)
        case, n = cases[i]
        return _complete(server.url, {"prompt": case["prompt"], "max_tokens": n, "temperature": 0, "logprobs": 0,
                                      "return_tokens_as_token_ids": True, "ignore_eos": True})

    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(run, range(len(cases))))
    for (case, n), r in zip(cases, results, strict=True):
        assert r.status_code == 200, r.text
        tokens = r.json()["choices"][0]["logprobs"]["tokens"]
        assert [int(t.split(":")[1]) for t in tokens] == case["greedy"][:n]


def test_tp2_sigterm_stops_every_rank(grok1_tiny_dir: Path) -> None:
    srv = start_process(["--model", str(grok1_tiny_dir), *TP_ARGS], timeout=240)
    try:
        worker = worker_pid(srv)
        r = _complete(srv.url, {"prompt": [5, 6, 7], "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200, r.text
        srv.terminate()
        assert srv.proc.wait(timeout=60) == 0
        assert wait_until(lambda: not alive(worker), 10)
    finally:
        srv.stop()
    out = srv.proc.stdout.read().decode(errors="replace") if srv.proc.stdout else ""
    assert "rank 1: stopped by rank 0" in out, out[-3000:]
    # each rank reports its shard and its peak host memory once loaded
    loaded = {int(m[0]): (float(m[1]), int(m[2])) for m in
              re.findall(r"rank (\d)/2: shard loaded, ([\d.]+) MiB of weights, peak RSS (\d+) MiB", out)}
    assert set(loaded) == {0, 1}, out[-3000:]
    assert loaded[0][0] == pytest.approx(loaded[1][0], rel=0.05)  # halves of the model
    print(f"shards loaded (MiB of weights, peak RSS MiB): {loaded}")


def test_tp2_worker_exits_when_rank0_is_killed(grok1_tiny_dir: Path) -> None:
    """Rank 0 killed outright (no drain, no stop broadcast): its spawned worker exits within
    seconds instead of waiting out the collective timeout, through whichever notices first: its
    parent watch, or gloo's closed connection in the step broadcast it is blocked in."""
    srv = start_process(["--model", str(grok1_tiny_dir), *TP_ARGS, "--tp-timeout-s", "600"], timeout=240)
    try:
        worker = worker_pid(srv)
        srv.proc.kill()
        srv.proc.wait(timeout=30)
        assert wait_until(lambda: not alive(worker), 15)
    finally:
        srv.stop()
    out = srv.proc.stdout.read().decode(errors="replace") if srv.proc.stdout else ""
    assert "exited; this rank exits too" in out or "Connection closed by peer" in out, out[-3000:]


def test_tp2_killed_worker_fails_requests_and_exits_nonzero(grok1_tiny_dir: Path) -> None:
    srv = start_process(["--model", str(grok1_tiny_dir), *TP_ARGS, "--max-model-len", "4096",
                         "--tp-timeout-s", "20"], timeout=240)
    try:
        worker = worker_pid(srv)
        result: dict[str, httpx.Response] = {}
        long = {"prompt": [11, 12, 13, 14], "max_tokens": 4000, "ignore_eos": True, "temperature": 0}
        request = threading.Thread(target=lambda: result.setdefault("r", _complete(srv.url, long)))
        request.start()
        time.sleep(1.0)  # the request is decoding
        os.kill(worker, signal.SIGKILL)
        t0 = time.monotonic()
        code = srv.proc.wait(timeout=60)
        assert time.monotonic() - t0 < 30
        request.join(timeout=30)
        assert code != 0
        r = result["r"]
        assert r.status_code == 503, r.text
        # whichever sees the death first names it: the watchdog ("rank 1 exited with code -9") or
        # the step's collective (gloo's closed connection)
        message = r.json()["error"]["message"]
        assert "engine stopped: rank 1 exited with code -9" in message or "engine stopped: tensor-parallel" in message
    finally:
        srv.stop()
    out = srv.proc.stdout.read().decode(errors="replace") if srv.proc.stdout else ""
    assert "rank 1 exited with code -9" in out or "the engine stopped: tensor-parallel" in out, out[-3000:]


def test_torchrun_two_ranks_serve_and_stop_on_sigterm(grok1_tiny_dir: Path, grok1_tiny_reference: dict) -> None:
    """Under torchrun no rank is spawned: rank 0 serves HTTP, rank 1 runs the worker loop; the
    SIGTERM torchrun forwards to both drains rank 0, which then stops rank 1. (torchrun itself
    exits 1 after any signal, however its ranks ended, so the ranks' own logs are checked.)"""
    torchrun = Path(sys.executable).with_name("torchrun")
    port = free_port()
    proc = subprocess.Popen(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "grokd.server.cli", "serve",
         "--model", str(grok1_tiny_dir), "--dtype", "float32", "--device", "cpu", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    srv = ServerProcess(f"http://127.0.0.1:{port}", proc)
    try:
        wait_ready(srv.url, 240)
        case = grok1_tiny_reference["fp32"]["single"][0]
        r = _complete(srv.url, {"prompt": case["prompt"], "max_tokens": len(case["greedy"]), "temperature": 0,
                                "logprobs": 0, "return_tokens_as_token_ids": True, "ignore_eos": True})
        assert r.status_code == 200, r.text
        assert [int(t.split(":")[1]) for t in r.json()["choices"][0]["logprobs"]["tokens"]] == case["greedy"]
        srv.terminate()
        proc.wait(timeout=90)
    finally:
        srv.stop()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert "rank 1: stopped by rank 0 after" in out, out[-3000:]
    assert "Application shutdown complete" in out and "engine loop died" not in out


def test_two_hosts_simulated_by_two_torchrun_agents_on_one_machine(grok1_tiny_dir: Path,
                                                                   grok1_tiny_reference: dict) -> None:
    """Two torchrun invocations, one rank each, meet through a c10d rendezvous on 127.0.0.1 as two
    hosts would (``--nnodes 2``): the rendezvous picks which agent's rank becomes rank 0 and
    listens; the other follows. Both must serve the reference and stop on SIGTERM."""
    torchrun = Path(sys.executable).with_name("torchrun")
    rdzv, http = free_port(), free_port()
    cmd = [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{rdzv}", "--rdzv-id", "grokd-two-hosts", "--local-addr", "127.0.0.1",
           "-m", "grokd.server.cli", "serve", "--model", str(grok1_tiny_dir), "--dtype", "float32",
           "--device", "cpu", "--host", "127.0.0.1", "--port", str(http), "--tp-timeout-s", "60"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    agents = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
              for _ in range(2)]
    srv = ServerProcess(f"http://127.0.0.1:{http}", agents[0])
    try:
        wait_ready(srv.url, 240)
        case = grok1_tiny_reference["fp32"]["single"][1]
        r = _complete(srv.url, {"prompt": case["prompt"], "max_tokens": len(case["greedy"]), "temperature": 0,
                                "logprobs": 0, "return_tokens_as_token_ids": True, "ignore_eos": True})
        assert r.status_code == 200, r.text
        assert [int(t.split(":")[1]) for t in r.json()["choices"][0]["logprobs"]["tokens"]] == case["greedy"]
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        for agent in agents:
            agent.wait(timeout=90)
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)
    logs = [a.stdout.read().decode(errors="replace") if a.stdout else "" for a in agents]
    both = "\n".join(logs)
    assert sum("listening on" in log or "Uvicorn running" in log for log in logs) == 1, both[-4000:]
    assert "rank 1: stopped by rank 0 after" in both, both[-4000:]


def test_tp2_stalled_worker_times_out_and_exits_nonzero(grok1_tiny_dir: Path) -> None:
    """A worker that stops answering (SIGSTOP: alive, so nothing notices it exit) fails the next
    collective after --tp-timeout-s; the server then answers 503 and exits non-zero."""
    srv = start_process(["--model", str(grok1_tiny_dir), *TP_ARGS, "--max-model-len", "4096",
                         "--tp-timeout-s", "10"], timeout=240)
    worker = worker_pid(srv)
    try:
        result: dict[str, httpx.Response] = {}
        long = {"prompt": [11, 12, 13, 14], "max_tokens": 4000, "ignore_eos": True, "temperature": 0}
        request = threading.Thread(target=lambda: result.setdefault("r", _complete(srv.url, long)))
        request.start()
        time.sleep(1.0)
        os.kill(worker, signal.SIGSTOP)
        t0 = time.monotonic()
        code = srv.proc.wait(timeout=60)
        assert time.monotonic() - t0 < 40
        request.join(timeout=30)
        assert code != 0
        assert result["r"].status_code == 503, result["r"].text
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
        srv.stop()
    out = srv.proc.stdout.read().decode(errors="replace") if srv.proc.stdout else ""
    assert "the engine stopped: tensor-parallel" in out, out[-3000:]
