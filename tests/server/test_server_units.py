"""Unit tests of the server's pieces that need no model: configuration precedence, API-key
storage and limits, the model registry, and the in-band SSE error event."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest

from grokd.engine.outputs import CompletionOutput, RequestOutput
from grokd.server.auth import Authenticator, hash_key
from grokd.server.config import ServerConfig, load_config
from grokd.server.errors import APIError
from grokd.server.registry import ModelRegistry, system_fingerprint


def test_config_precedence_cli_env_file_defaults(tmp_path) -> None:
    toml = tmp_path / "grokd.toml"
    toml.write_text('port = 1111\nhost = "0.0.0.0"\nmax-num-seqs = 7\nalias = ["a", "b"]\n'
                    '[server]\nlog_prompts = true\n')
    assert load_config({}, env={}).port == 8000
    assert load_config({}, env={}, config_file=toml).port == 1111
    env = {"GROKD_PORT": "2222", "GROKD_API_KEY": "k1,k2", "GROKD_KV_CACHE_MEMORY": "2G",
           "GROKD_ENABLE_PREFIX_CACHING": "false"}
    cfg = load_config({}, env=env, config_file=toml)
    assert cfg.port == 2222 and cfg.host == "0.0.0.0" and cfg.max_num_seqs == 7 and cfg.log_prompts
    assert cfg.api_key == ["k1", "k2"] and cfg.kv_cache_memory == 2 << 30 and cfg.enable_prefix_caching is False
    assert cfg.alias == ["a", "b"]
    cfg = load_config({"port": 3333, "host": None, "alias": []}, env=env, config_file=toml)
    assert cfg.port == 3333 and cfg.host == "0.0.0.0" and cfg.alias == ["a", "b"]
    assert load_config({}, env={"GROKD_CONFIG": str(toml)}).port == 1111
    (tmp_path / "bad.toml").write_text("no_such_setting = 1\n")
    with pytest.raises(ValueError, match="no_such_setting"):
        load_config({}, env={}, config_file=tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="port"):
        load_config({}, env={"GROKD_PORT": "eighty"})


def test_engine_config_from_server_config() -> None:
    ec = ServerConfig(model="m", dtype="float32", block_size=32, num_kv_blocks=99, max_num_seqs=3,
                      max_queued_requests=5, max_model_len=128).engine_config()
    assert ec.model.model == "m" and ec.model.dtype == "float32" and ec.model.max_model_len == 128
    assert ec.cache.block_size == 32 and ec.cache.num_blocks == 99
    assert ec.scheduler.max_num_seqs == 3 and ec.scheduler.max_queued_requests == 5


def _serve_parser() -> argparse.ArgumentParser:
    from grokd.server.serve_cli import add_cli

    parser = argparse.ArgumentParser(prog="grokd")
    add_cli(parser.add_subparsers(dest="command"))
    return parser


def test_serve_cli_flags(monkeypatch) -> None:
    from grokd.server.serve_cli import config_from_args

    monkeypatch.setenv("GROKD_MAX_NUM_SEQS", "9")
    monkeypatch.setenv("GROKD_PORT", "4444")
    args = _serve_parser().parse_args(["serve", "--model", "/m", "--alias", "x", "--alias", "y", "--api-key", "k",
                                      "--port", "5555", "--kv-cache-memory", "512M", "--log-prompts"])
    cfg = config_from_args(args)
    assert cfg.model == "/m" and cfg.alias == ["x", "y"] and cfg.api_key == ["k"] and cfg.port == 5555
    assert cfg.max_num_seqs == 9 and cfg.kv_cache_memory == 512 << 20 and cfg.log_prompts is True
    with pytest.raises(SystemExit):
        _serve_parser().parse_args(["serve", "--api-key", "k", "--api-key-file", "f"])


def test_jobs_flags_reach_jobs_config(monkeypatch, tmp_path) -> None:
    from grokd.server.jobs import JobsConfig
    from grokd.server.serve_cli import config_from_args

    defaults = config_from_args(_serve_parser().parse_args(["serve"])).jobs_config(tmp_path)
    plain = JobsConfig(state_dir=tmp_path)
    assert (defaults.max_in_flight, defaults.idle_max_in_flight, defaults.max_upload_bytes,
            defaults.deferred_retention_s) == (plain.max_in_flight, plain.idle_max_in_flight,
                                               plain.max_upload_bytes, plain.deferred_retention_s)
    monkeypatch.setenv("GROKD_DEFERRED_RETENTION_S", "3600")
    monkeypatch.setenv("GROKD_MAX_UPLOAD_BYTES", "10M")
    args = _serve_parser().parse_args(["serve", "--batch-max-in-flight", "3", "--batch-idle-max-in-flight", "32"])
    jobs = config_from_args(args).jobs_config(tmp_path)
    assert (jobs.max_in_flight, jobs.idle_max_in_flight, jobs.max_upload_bytes, jobs.deferred_retention_s) == (
        3, 32, 10 << 20, 3600.0)
    args = _serve_parser().parse_args(["serve", "--max-upload-bytes", "100M", "--deferred-retention-s", "60"])
    jobs = config_from_args(args).jobs_config(tmp_path)
    assert jobs.max_upload_bytes == 100 << 20 and jobs.deferred_retention_s == 60.0 and jobs.state_dir == tmp_path
    with pytest.raises(ValueError, match="idle_max_in_flight"):
        config_from_args(_serve_parser().parse_args(["serve", "--batch-idle-max-in-flight", "0"])).jobs_config(tmp_path)


def test_api_keys_hashed_constant_time_and_limited(tmp_path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# comment\nsk-plain-secret-0001 name=alice\nsha256:{hash_key('sk-hashed-secret-02')} name=bob "
                 "models=m1 rpm=1\nsk-blocked-secret-03 blocked=true\n")
    auth = Authenticator.from_config(["sk-cli-secret-00004"], str(f))
    assert all("secret" not in k.digest and "secret" not in k.redacted[4:-4] for k in auth.keys)
    assert "sk-plain-secret-0001" not in repr(auth.keys)
    assert auth.identify("Bearer sk-plain-secret-0001").name == "alice"
    assert auth.identify(None, "sk-cli-secret-00004").name.startswith("key-")
    bob = auth.identify("Bearer sk-hashed-secret-02")
    assert bob.name == "bob" and bob.allows_model("m1") and not bob.allows_model("m2")
    for header, status in ((None, 401), ("Bearer nope", 401), ("Basic x", 401),
                           ("Bearer sk-blocked-secret-03", 403)):
        with pytest.raises(APIError) as exc:
            auth.identify(header)
        assert exc.value.status == status
    auth.check_request(bob)
    with pytest.raises(APIError) as exc:
        auth.check_request(bob)
    assert exc.value.status == 429 and exc.value.headers["x-should-retry"] == "true"
    assert 50 <= float(exc.value.headers["retry-after-ms"]) / 1000 <= 60
    assert not Authenticator.from_config([], None).enabled


def test_tokens_per_minute_budget() -> None:
    auth = Authenticator.from_config(["sk-tpm-secret-0001 tpm=100"], None)
    key = auth.keys[0]
    auth.check_request(key)
    auth.charge_tokens(key, 150)
    with pytest.raises(APIError) as exc:
        auth.check_request(key)
    assert exc.value.status == 429 and "tokens per minute" in exc.value.message


def test_registry_aliases_and_fingerprint() -> None:
    from grokd.engine.async_engine import ModelInfo

    info = ModelInfo(architecture="grok-1", max_model_len=2048, vocab_size=131072, fingerprint="abc123def4567890",
                     chat_template=None, dtype="bfloat16", checkpoint_path="")
    reg = ModelRegistry.for_engine(info, served_name="grok-1", version="20260101", aliases=["grok"])
    m = reg.default
    for name in ("grok-1", "grok-1-latest", "grok-1-20260101", "grok"):
        assert reg.resolve(name) is m
    assert reg.resolve("grok-2") is None
    assert m.system_fingerprint == system_fingerprint(info.fingerprint)
    assert m.system_fingerprint.startswith("fp_") and len(m.system_fingerprint) == 13
    assert set(m.system_fingerprint[3:]) <= set("0123456789abcdef")
    # sha256 of "<weights fingerprint>|grokd-<version>", first 10 hex digits
    assert system_fingerprint(info.fingerprint, "1.2.3") == "fp_2c85b7acfa"
    assert system_fingerprint("other") != m.system_fingerprint
    assert system_fingerprint(info.fingerprint, "9.9.9") != m.system_fingerprint
    assert ModelRegistry.for_engine(info, served_name="x").default.version == "abc123de"


def test_stream_ends_with_in_band_error_event() -> None:
    """An engine failure after the stream started becomes ``data: {"error": ...}`` and no [DONE]."""
    from grokd.server.metrics import ServerMetrics, TokenTimer
    from grokd.server.routes.generation import EngineCall
    from grokd.server.streaming import StreamFailure, sse_response

    async def outputs():
        yield RequestOutput("r1", [1, 2], [CompletionOutput(0, delta_text="hi", delta_token_ids=[5])])
        yield RequestOutput("r1", [1, 2], [CompletionOutput(0, finish_reason="error")], finished=True,
                            error="CUDA error: device lost")

    class Engine:
        def abort(self, request_id: str) -> None:
            pass

    async def render(merged):
        async for _, out in merged:
            if out.error:
                raise StreamFailure(f"engine failed: {out.error}")
            yield b"data: {}\n\n"

    async def run() -> list[bytes]:
        call = EngineCall("r1", None, outputs(), Engine(), TokenTimer(ServerMetrics(), 0.0), 2)
        response = sse_response([call], render, "r1", stall_timeout_s=30.0)
        return [chunk async for chunk in response.body_iterator]

    events = asyncio.run(run())
    assert events[0] == b"data: {}\n\n"
    last = json.loads(events[-1].decode().removeprefix("data: "))
    assert last["error"]["type"] == "server_error" and "device lost" in last["error"]["message"]
    assert b"data: [DONE]\n\n" not in events


def test_bad_device_is_refused_when_the_config_is_built():
    for bad in ("nonsense", "gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="device: expected 'cpu', 'cuda' or 'cuda:N'"):
            load_config({"device": bad}, env={})
    with pytest.raises(ValueError, match="device"):
        load_config({}, env={"GROKD_DEVICE": "tpu"})
    assert load_config({"device": "cuda:1"}, env={}).engine_config().model.device == "cuda:1"


def test_token_budget_defaults_per_device_and_a_given_one_wins():
    assert load_config({}, env={}).engine_config().scheduler.max_num_batched_tokens == 1024
    assert load_config({"device": "cuda"}, env={}).engine_config().scheduler.max_num_batched_tokens == 2048
    given = load_config({}, env={"GROKD_MAX_NUM_BATCHED_TOKENS": "4096"}).engine_config()
    assert given.scheduler.max_num_batched_tokens == 4096


def test_kv_cache_dtype_reaches_the_engine_config():
    assert load_config({"kv_cache_dtype": "int8"}, env={}).engine_config().cache.dtype == "int8"
    assert load_config({}, env={"GROKD_KV_CACHE_DTYPE": "int8"}).engine_config().cache.dtype == "int8"
    assert load_config({}, env={}).engine_config().cache.dtype == "auto"
    with pytest.raises(ValueError, match="kv_cache_dtype: expected one of auto, int8, got 'fp8'"):
        load_config({"kv_cache_dtype": "fp8"}, env={})


def test_serve_refuses_a_bad_setting_in_one_line_before_listening():
    """`grokd serve` with a bad value (flag or GROKD_* variable): exit 2, the setting named on one
    stderr line, no traceback, and nothing started."""
    import os
    import subprocess
    import sys

    cases = ((["--device", "nonsense"], {}, "device: expected 'cpu', 'cuda' or 'cuda:N', got 'nonsense'"),
             ([], {"GROKD_MAX_NUM_SEQS": "abc"}, "max_num_seqs"),
             (["--kv-cache-dtype", "fp4"], {}, "kv_cache_dtype: expected one of auto, int8, got 'fp4'"),
             ([], {"GROKD_KV_CACHE_DTYPE": "fp8"}, "kv_cache_dtype: expected one of auto, int8, got 'fp8'"))
    procs = [subprocess.Popen([sys.executable, "-m", "grokd.server.cli", "serve", "--port", "1", *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
             for extra, env, _ in cases]  # side by side: each spends seconds importing
    for proc, (_, _, named) in zip(procs, cases, strict=True):
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert stderr.startswith("grokd serve: error: ") and "Traceback" not in stderr
        assert named in stderr


def test_a_subcommand_imports_its_own_module_alone():
    """`grokd serve ...` builds only serve's parser: the converter (ml_dtypes: seconds to import) and
    the benchmarks stay unimported; `grokd --help` still lists every subcommand."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from grokd.server.cli import SUBCOMMAND_MODULES, build_parser\n"
            "build_parser('serve').parse_args(['serve', '--port', '1'])\n"
            "print(sorted(m for m in SUBCOMMAND_MODULES.values() if m in sys.modules))\n"
            "print('ml_dtypes' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["['grokd.server.serve_cli']", "False"]
    helped = subprocess.run([sys.executable, "-m", "grokd.server.cli", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert "{serve,chat,generate,convert,batch,bench,plan}" in helped.stdout


def test_the_cli_needs_no_test_or_bench_extras():
    """Building `grokd`'s parser imports every bench module; none may need the openai client,
    transformers or matplotlib at import time, or `grokd serve` fails where only the runtime
    dependencies are installed (as it once did on a GPU machine)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for name in ('openai', 'transformers', 'matplotlib'):\n"
            "    sys.modules[name] = None  # any import of them raises ImportError\n"
            "from grokd.server.cli import build_parser\n"
            "args = build_parser().parse_args(['serve', '--port', '1'])\n"
            "print(args.port)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
