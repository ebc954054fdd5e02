"""The server configuration's layers and values beyond the precedence checks in
test_server_units.py: what direct construction reads, the TOML file's layout, value parsing, and
one-line errors that name the setting."""

from __future__ import annotations

import argparse

import pytest

from grokd.server.config import ServerConfig, load_config, parse_size
from grokd.server.jobs import JobsConfig


def test_direct_construction_reads_neither_the_environment_nor_a_file(monkeypatch, tmp_path) -> None:
    toml = tmp_path / "grokd.toml"
    toml.write_text("port = 1111\n")
    monkeypatch.setenv("GROKD_PORT", "2222")
    monkeypatch.setenv("GROKD_CONFIG", str(toml))
    assert ServerConfig().port == 8000
    assert ServerConfig(port=3333).port == 3333
    assert load_config({}).port == 2222  # load_config reads os.environ when no env is given
    assert load_config({}, env={"GROKD_CONFIG": str(toml)}).port == 1111


def test_given_env_replaces_the_process_environment(monkeypatch) -> None:
    monkeypatch.setenv("GROKD_MAX_NUM_SEQS", "5")
    assert load_config({}, env={}).max_num_seqs == 64
    assert load_config({}, env={"GROKD_MAX_NUM_SEQS": "7"}).max_num_seqs == 7


def test_env_values_are_parsed_per_setting() -> None:
    env = {"GROKD_ALIAS": " a, b ,,c", "GROKD_MAX_UPLOAD_BYTES": "10M", "GROKD_KV_CACHE_MEMORY": "1.5G",
           "GROKD_LOG_PROMPTS": "On", "GROKD_ENFORCE_EAGER": "1", "GROKD_ENABLE_PREFIX_CACHING": "no",
           "GROKD_RETRY_AFTER_S": "2.5", "GROKD_MODEL": "", "GROKD_API_KEY": ""}
    cfg = load_config({}, env=env)
    assert cfg.alias == ["a", "b", "c"] and cfg.max_upload_bytes == 10 << 20
    assert cfg.kv_cache_memory == 3 << 29 and cfg.retry_after_s == 2.5
    assert cfg.log_prompts is True and cfg.enforce_eager is True and cfg.enable_prefix_caching is False
    assert cfg.model is None and cfg.api_key == []


def test_an_empty_variable_unsets_what_the_file_set(tmp_path) -> None:
    toml = tmp_path / "grokd.toml"
    toml.write_text('model = "/from/file"\nstate_dir = "/state"\n')
    cfg = load_config({}, env={"GROKD_MODEL": ""}, config_file=toml)
    assert cfg.model is None and cfg.state_dir == "/state"


def test_toml_layout_aliases_and_values(tmp_path) -> None:
    toml = tmp_path / "grokd.toml"
    toml.write_text('model-version = 2\napi_keys = ["k1", "k2"]\nkv-cache-memory = "512M"\n'
                    '[server]\nenforce-eager = "yes"\nport = 9000\n')
    cfg = load_config({}, env={}, config_file=toml)
    assert cfg.model_version == "2" and cfg.api_key == ["k1", "k2"] and cfg.kv_cache_memory == 512 << 20
    assert cfg.enforce_eager is True and cfg.port == 9000


def test_toml_unknown_key_names_the_file_and_the_key(tmp_path) -> None:
    toml = tmp_path / "grokd.toml"
    toml.write_text("[server]\nmax-num-seq = 3\n")
    with pytest.raises(ValueError, match=r"grokd\.toml: unknown setting 'max-num-seq'"):
        load_config({}, env={}, config_file=toml)


def test_a_named_config_file_must_exist(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        load_config({}, env={}, config_file=tmp_path / "missing.toml")
    with pytest.raises(FileNotFoundError):
        load_config({}, env={"GROKD_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(("env", "message"), [
    ({"GROKD_MAX_NUM_SEQS": "abc"}, "max_num_seqs: Input should be a valid integer"),
    ({"GROKD_LOG_PROMPTS": "maybe"}, "log_prompts: not a boolean: 'maybe'"),
    ({"GROKD_KV_CACHE_MEMORY": "lots"}, "kv_cache_memory: not a size: 'lots'"),
    ({"GROKD_RETRY_AFTER_S": "soon"}, "retry_after_s: Input should be a valid number"),
    ({"GROKD_TENSOR_PARALLEL_SIZE": "0"}, "tensor_parallel_size: expected >= 1, got 0"),
    ({"GROKD_TP_REDUCE_DTYPE": "fp8"}, "tp_reduce_dtype: expected one of float32, bfloat16, got 'fp8'"),
    ({"GROKD_TP_TIMEOUT_S": "0"}, "tp_timeout_s: expected > 0 seconds, got 0.0"),
    ({"GROKD_TP_STARTUP_TIMEOUT_S": "-1"}, "tp_startup_timeout_s: expected > 0 seconds, got -1.0"),
    ({"GROKD_KERNEL_BACKEND": "cuda"}, "kernel_backend: expected one of auto, torch, triton, got 'cuda'"),
    ({"GROKD_SPECULATIVE_CONFIG": '{"method": "eagle"}'},
     "speculative_config: speculative_config.method: expected one of ngram, draft_model, got 'eagle'"),
])
def test_a_bad_value_is_one_line_naming_the_setting(env, message) -> None:
    with pytest.raises(ValueError) as exc:
        load_config({}, env=env)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_parallel_settings_reach_the_engine_config() -> None:
    config = load_config({"tensor_parallel_size": 8, "enable_expert_parallel": True, "tp_reduce_dtype": "bfloat16"},
                         env={"GROKD_TP_TIMEOUT_S": "60", "GROKD_TP_STARTUP_TIMEOUT_S": "600"})
    par = config.engine_config().parallel
    assert (par.tensor_parallel_size, par.enable_expert_parallel, par.reduce_dtype, par.timeout_s,
            par.startup_timeout_s) == (8, True, "bfloat16", 60.0, 600.0)
    assert ServerConfig().engine_config().parallel.tensor_parallel_size == 1


def test_kernel_backend_reaches_the_engine_config() -> None:
    assert load_config({"kernel_backend": "triton"}).engine_config().model.kernel_backend == "triton"
    assert ServerConfig().engine_config().model.kernel_backend == "auto"


def test_every_bad_value_is_reported() -> None:
    with pytest.raises(ValueError) as exc:
        load_config({"device": "tpu"}, env={"GROKD_PORT": "x"})
    assert "device: expected" in str(exc.value) and "port: " in str(exc.value)


def test_a_toml_boolean_must_be_a_boolean(tmp_path) -> None:
    toml = tmp_path / "grokd.toml"
    toml.write_text("log_prompts = 1\n")
    with pytest.raises(ValueError, match="log_prompts: not a boolean: 1"):
        load_config({}, env={}, config_file=toml)


def test_cli_values_that_were_not_given_leave_lower_layers_alone() -> None:
    env = {"GROKD_HOST": "0.0.0.0", "GROKD_API_KEY": "k"}
    cfg = load_config({"host": None, "api_key": [], "port": 1234, "input": "not a setting"}, env=env)
    assert cfg.host == "0.0.0.0" and cfg.api_key == ["k"] and cfg.port == 1234


def test_direct_construction_validates() -> None:
    with pytest.raises(ValueError, match="device: expected 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        ServerConfig(device="tpu")
    with pytest.raises(ValueError, match="no_such_setting"):
        ServerConfig(no_such_setting=1)
    assert ServerConfig(kv_cache_memory="2G", alias="a,b").kv_cache_memory == 2 << 30


def test_copies_and_equality() -> None:
    cfg = ServerConfig(model="m", alias=["a"])
    other = cfg.model_copy(update={"port": 1})
    assert other.port == 1 and other.model == "m" and cfg.port == 8000
    assert cfg == ServerConfig(model="m", alias=["a"]) and cfg != other


def test_jobs_config_is_typed(tmp_path) -> None:
    jobs = ServerConfig(batch_max_in_flight=4, max_upload_bytes="1M").jobs_config(str(tmp_path))
    assert isinstance(jobs, JobsConfig) and jobs.state_dir == tmp_path
    assert jobs.max_in_flight == 4 and jobs.max_upload_bytes == 1 << 20


def test_parse_size() -> None:
    assert parse_size("8G") == 8 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000
    assert parse_size("2kb") == 2048
    with pytest.raises(ValueError, match="not a size"):
        parse_size("8X")


def test_every_setting_is_a_serve_flag() -> None:
    from grokd.server.serve_cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dests = {action.dest for action in parser._actions}
    assert set(ServerConfig.model_fields) <= dests


def test_speculative_config_reaches_the_engine_config(tmp_path) -> None:
    from grokd.engine.config import SpeculativeConfig

    flag = '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 5, "prompt_lookup_min": 1}'
    spec = load_config({"speculative_config": flag}).engine_config().speculative
    assert spec == SpeculativeConfig("ngram", 3, 5, 1)
    toml = tmp_path / "grokd.toml"
    toml.write_text("[speculative_config]\nmethod = 'ngram'\nnum_speculative_tokens = 2\n")
    assert load_config({}, config_file=toml).engine_config().speculative == SpeculativeConfig(num_speculative_tokens=2)
    assert ServerConfig().engine_config().speculative is None
