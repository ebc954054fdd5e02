"""``grokd serve``: load the model, build the app, run uvicorn.

SIGTERM/SIGINT drain first: /ready and new requests answer 503 while in-flight requests finish
(up to ``--drain-timeout``), then uvicorn stops and the lifespan shuts the engine down. A second
signal stops at once: requests still running are cancelled (their engine requests aborted) and
the process ends killed by that signal (status 143 for SIGTERM, -15 to a Python parent). If the
engine loop thread dies (any exception outside its per-step guard), /ready answers 503, requests
in flight end with 503, new ones get 503, and the server exits with status 1 so a supervisor
restarts it.

Tensor parallel (``--tensor-parallel-size N``): this process is rank 0. It spawns ranks 1..N-1
(``engine.parallel.launch``), or, under torchrun, joins the world torchrun started, where the
ranks other than 0 run only the worker loop and no HTTP server. Rank 0 serves, schedules and
samples; the engine's shutdown broadcasts the stop that lets the workers exit. If a rank dies
(a spawned worker exits, a collective fails or times out) the engine stops, in-flight requests
end with 503, /ready answers 503, and the server exits with status 1, the rank and cause logged;
threads stuck in a collective with the dead rank cannot be joined, so that exit is immediate.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from grokd.server.config import ServerConfig, load_config, parse_size
from grokd.server.http_limits import uvicorn_config
from grokd.server.live.cli import add_arguments as add_live_arguments
from grokd.server.live.cli import config_from_args as live_config_from_args

if TYPE_CHECKING:  # the engine (torch) loads only when serving, not to build `grokd --help`
    from grokd.engine.async_engine import AsyncEngine
    from grokd.engine.parallel.launch import World
    from grokd.server.state import ServerState

log = logging.getLogger("grokd.server")


def _size(text: str) -> int:
    return parse_size(text)


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("serve", help="serve a model over the xAI/OpenAI HTTP API",
                              description="Serve a model over the xAI/OpenAI-compatible HTTP API.")
    add_arguments(p)
    p.set_defaults(func=main)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag defaults to None so that env vars and the config file can fill what is unset."""
    m = p.add_argument_group("model")
    m.add_argument("--model", help="checkpoint dir, .gguf file or HF dir (default: SmolLM2-135M-Instruct)")
    m.add_argument("--served-model-name", help="model id clients use (default: from the path)")
    m.add_argument("--alias", action="append", help="extra name for the model (repeatable)")
    m.add_argument("--model-version", help="version for the pinned alias <name>-<version>")
    m.add_argument("--tokenizer", help="tokenizer path when the checkpoint has none")
    m.add_argument("--dtype", choices=["auto", "bfloat16", "float32", "float16"],
                   help="activation dtype (default auto: bfloat16 on CUDA and on CPUs with AVX2 and up, else float32)")
    m.add_argument("--weights-dtype", choices=["auto", "int8", "fp8", "bfloat16", "float32"],
                   help="how linear weights are held; fp8 (e4m3, Grok models) is lossy, see RESULTS.md")
    m.add_argument("--device")
    m.add_argument("--max-model-len", type=int)
    m.add_argument("--enforce-eager", action="store_true", default=None,
                   help="no CUDA-graph replay of decode steps (CUDA only; for debugging)")
    m.add_argument("--kernel-backend", choices=["auto", "torch", "triton"],
                   help="GPU kernels: triton (grokd's Triton kernels), torch (PyTorch ops) or auto (default: "
                        "triton on CUDA where it imports); triton on the CPU needs TRITON_INTERPRET=1")
    m.add_argument("--seed", type=int)
    t = p.add_argument_group("tensor parallelism (Grok-1 and the Llama family)")
    t.add_argument("--tensor-parallel-size", "--tp", type=int, dest="tensor_parallel_size",
                   help="ranks that each hold a slice of the model; serve spawns the other ranks itself "
                        "(under torchrun: the world torchrun started)")
    t.add_argument("--enable-expert-parallel", action="store_true", default=None,
                   help="give each rank whole experts instead of a slice of every expert")
    t.add_argument("--tp-reduce-dtype", choices=["float32", "bfloat16"],
                   help="dtype partial sums travel and add up in (default float32)")
    t.add_argument("--tp-timeout-s", type=float,
                   help="seconds a step's collective may take before the server gives up on a rank (default 300)")
    t.add_argument("--tp-startup-timeout-s", type=float,
                   help="seconds the ranks may take to join and load their shards (default 1800)")
    c = p.add_argument_group("cache and scheduler")
    c.add_argument("--block-size", type=int)
    c.add_argument("--kv-cache-memory", type=_size, help="KV cache budget in bytes (8G, 512M, ...)")
    c.add_argument("--num-kv-blocks", type=int)
    c.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    c.add_argument("--kv-cache-dtype", metavar="{auto,int8}",
                   help="KV cache storage: auto (the activation dtype) or int8 (per-token scales, about half the bytes)")
    c.add_argument("--max-num-batched-tokens", type=int,
                   help="tokens per engine step (prefill chunks + decodes); default 1024 on the CPU, 2048 on a GPU")
    c.add_argument("--max-prefill-tokens-while-decoding", type=int,
                   help="prompt tokens at most in a step that also decodes (bounds inter-token latency under bursts)")
    c.add_argument("--max-num-seqs", type=int)
    c.add_argument("--max-queued-requests", type=int, help="waiting-queue bound; beyond it requests get 429")
    c.add_argument("--speculative-config", metavar="JSON",
                   help='speculative decoding, e.g. \'{"method": "ngram", "num_speculative_tokens": 4, '
                        '"prompt_lookup_max": 4, "prompt_lookup_min": 2}\' (prompt lookup) or \'{"method": '
                        '"draft_model", "model": PATH, "num_speculative_tokens": 3}\' (a smaller model of the same '
                        'tokenizer); drafts are verified in the batch')
    h = p.add_argument_group("http")
    h.add_argument("--host")
    h.add_argument("--port", type=int)
    h.add_argument("--grpc-port", type=int,
                   help="also serve xAI's gRPC API (what xai-sdk speaks) on this port; off by default; "
                        "needs the grpc extra: pip install 'grokd[grpc]'")
    keys = h.add_mutually_exclusive_group()
    keys.add_argument("--api-key", action="append", help="accepted API key (repeatable)")
    keys.add_argument("--api-key-file", help="file with one key (or sha256:HEX) per line")
    h.add_argument("--rate-limit-rpm", type=int, help="per-key requests per minute (0 = unlimited)")
    h.add_argument("--rate-limit-tpm", type=int, help="per-key tokens per minute (0 = unlimited)")
    h.add_argument("--max-body-bytes", type=int)
    h.add_argument("--timeout-keep-alive-s", "--timeout-keep-alive", type=int, dest="timeout_keep_alive_s",
                   help="seconds an idle connection is kept open, before its first request and between "
                        "requests (default 5)")
    h.add_argument("--request-header-timeout-s", type=float,
                   help="seconds a request's headers may take to arrive once it starts, else 408 (default 10)")
    h.add_argument("--request-body-timeout-s", type=float,
                   help="seconds a request's whole body may take to arrive, else 408 (default 60; "
                        "raise it for large uploads over slow links)")
    h.add_argument("--limit-concurrency", type=int,
                   help="open connections plus running requests at most; beyond it new requests get 503 "
                        "(default: no cap)")
    h.add_argument("--max-header-bytes", type=_size, help="largest request head, else 400 (default 16K)")
    h.add_argument("--retry-after-s", type=float, help="Retry-After sent with 429/503")
    h.add_argument("--drain-timeout-s", "--drain-timeout", type=float, dest="drain_timeout_s")
    h.add_argument("--stream-stall-timeout-s", "--stream-stall-timeout", type=float, dest="stream_stall_timeout_s",
                   help="abort a stream whose client reads nothing for this many seconds (default 30)")
    h.add_argument("--state-dir", help="directory for files, batches and deferred results")
    h.add_argument("--log-prompts", action="store_true", default=None, help="log prompt text (off by default)")
    h.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    h.add_argument("--no-ui", dest="ui", action="store_false", default=None,
                   help="do not serve the sampler lab page at / (the API is unchanged)")
    j = p.add_argument_group("files, batches and deferred completions")
    j.add_argument("--batch-max-in-flight", type=int,
                   help="batch lines inside the engine at once while interactive requests run (default 2)")
    j.add_argument("--batch-idle-max-in-flight", type=int,
                   help="batch lines inside the engine at once when there is no interactive work (default 16)")
    j.add_argument("--max-upload-bytes", type=_size, help="/v1/files upload limit (default 50M)")
    j.add_argument("--deferred-retention-s", type=float,
                   help="seconds deferred completion results are kept (default 86400)")
    j.add_argument("--responses-retention-s", type=float,
                   help="seconds stored /v1/responses are kept for previous_response_id (default 2592000, 30 days)")
    p.add_argument("--config", help="TOML config file (CLI > GROKD_* env > file > defaults)")
    add_live_arguments(p)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    cli = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    return load_config(cli, config_file=args.config)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first signal drains (503 to new work) before stopping."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.draining or self._loop is None:
            # A second signal (or one before the loop runs) stops now: no waiting for connections
            # or the lifespan's engine drain. uvicorn re-raises the captured signal once it has
            # stopped, so the process ends killed by it (exit status 128 + signal number).
            log.warning("signal %s: stopping now", sig)
            super().handle_exit(sig, frame)
            self.force_exit = True
            return
        log.info("signal %s: draining (timeout %.0fs)", sig, self.state.config.drain_timeout_s)
        self.state.draining = True
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        clean = await self.state.drain(self.state.config.drain_timeout_s)
        if not clean:
            log.warning("drain timeout: %d requests still running are aborted", self.state.in_flight)
        self.should_exit = True


def check_grpc_available() -> None:
    """``--grpc-port`` needs grpcio and the stubs in xai-sdk: say so before loading anything."""
    try:
        import grokd.server.grpc.server  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--grpc-port needs the grpc extra (pip install 'grokd[grpc]'): {exc}") from None


def build_state(config: ServerConfig) -> ServerState:
    """Load the model now and return a ready-to-serve state (batch CLI, tests)."""
    from grokd.engine.async_engine import AsyncEngine
    from grokd.server.state import ServerState

    engine = AsyncEngine(config.engine_config())
    return ServerState.build(config, engine)


def configure_logging(config: ServerConfig) -> None:
    """Root logging at ``--log-level``. httpx logs every request URL at INFO, and live search
    URLs (X, SearXNG) carry words of the user's question, so without ``--log-prompts`` its
    request lines are kept out (warnings and errors still show)."""
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not config.log_prompts:
        for name in ("httpx", "httpcore"):
            if logging.getLogger(name).level < logging.WARNING:
                logging.getLogger(name).setLevel(logging.WARNING)


def main(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        from grokd.engine.parallel.launch import torchrun_env

        rank_env = torchrun_env(os.environ)
        if config.grpc_port is not None:
            check_grpc_available()
    except ValueError as exc:  # a bad flag, GROKD_* variable or TOML value: one line, exit 2
        print(f"grokd serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config)
    if rank_env is not None and rank_env.rank != 0:  # torchrun's other ranks: the worker loop only
        from grokd.engine.parallel.launch import worker_main

        return worker_main(rank_env, config.engine_config())
    from grokd.engine.async_engine import AsyncEngine
    from grokd.engine.errors import ParallelFailure
    from grokd.engine.parallel.launch import World, join_world, spawn_world
    from grokd.server.app import create_app
    from grokd.server.state import ServerState

    exit_code = 0
    world: World | None = None
    engine: AsyncEngine | None = None
    failed = False

    def load_failed(exc: BaseException) -> None:
        nonlocal exit_code
        exit_code = 1
        server.should_exit = True

    def engine_died(exc: BaseException) -> None:
        nonlocal exit_code, failed
        log.error("the engine stopped: %s; exiting", exc)
        exit_code, failed = 1, True
        server.should_exit = True

    def rank_exited(rank: int, code: int | None) -> None:
        exc = ParallelFailure(f"rank {rank} exited with code {code}")
        log.error("tensor-parallel rank %d exited with code %s", rank, code)
        if engine is not None:
            engine.fail(exc)
        engine_died(exc)

    def load() -> AsyncEngine:
        nonlocal world, engine
        engine_config = config.engine_config()
        if rank_env is not None:
            group, engine_config = join_world(rank_env, engine_config)
            world = World(group, engine_config)
        elif engine_config.parallel.tensor_parallel_size > 1:
            world = spawn_world(engine_config, rank_exited)
            engine_config = world.config
        engine = AsyncEngine(engine_config, group=world.group if world else None, on_fatal=engine_died)
        return engine

    # Listen first, load in the background: /health answers at once, /ready and the API say
    # 503 "not ready yet" until the model is loaded.
    state = ServerState.loading(config, load, load_failed)
    args.state_dir = config.state_dir
    state.live_config = live_config_from_args(args)
    app = create_app(state)
    log.info("listening on http://%s:%d%s; loading %s", config.host, config.port,
             f" and gRPC on {config.host}:{config.grpc_port}" if config.grpc_port is not None else "",
             config.model or "the default model")
    server = DrainingServer(
        uvicorn_config(app, config.host, config.port, config.connection_limits(), log_level=config.log_level,
                       timeout_graceful_shutdown=int(config.drain_timeout_s) + 1,
                       # grpc.aio shares this loop: the stock asyncio loop, never uvloop under it
                       loop="asyncio" if config.grpc_port is not None else "auto"),
        state,
    )
    server.run()
    if world is not None and (failed or exit_code):
        logging.shutdown()
        os._exit(exit_code)  # threads blocked in a collective with a dead rank never return
    if world is not None:
        world.close(timeout=30.0)
    return exit_code
