import re
from pathlib import Path

import pytest

from localxai.errors import ConfigError
from localxai.settings import build_settings


def test_defaults() -> None:
    s = build_settings({}, environ={})
    assert s.host == "127.0.0.1" and s.port == 8000 and not s.api_keys and s.model is None and s.grpc_port == 50051


def test_flags_win_over_environment() -> None:
    env = {"LOCALXAI_PORT": "9000", "LOCALXAI_API_KEYS": "a,b", "LOCALXAI_CTX_SIZE": "1024"}
    s = build_settings({"port": 9100}, environ=env)
    assert s.port == 9100 and s.api_keys == ("a", "b") and s.ctx_size == 1024
    s = build_settings({"api_key": ["c"]}, environ=env)
    assert s.api_keys == ("c",)


def test_aliases() -> None:
    s = build_settings({"alias": ["grok-4=m", " grok-4.3 = m "]}, environ={})
    assert s.aliases == (("grok-4", "m"), ("grok-4.3", "m"))
    with pytest.raises(ConfigError, match="NAME=MODEL"):
        build_settings({"alias": ["grok-4"]}, environ={})


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        build_settings({"model": str(tmp_path / "nope.gguf")}, environ={})


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match="LOCALXAI_PORT"):
        build_settings({}, environ={"LOCALXAI_PORT": "eighty"})


def test_mmproj_goes_with_a_model_file(tmp_path: Path) -> None:
    model, projector = tmp_path / "m.gguf", tmp_path / "mmproj.gguf"
    model.write_bytes(b"GGUF")
    projector.write_bytes(b"GGUF")
    s = build_settings({"model": str(model), "mmproj": str(projector)}, environ={})
    assert s.mmproj == projector
    with pytest.raises(ConfigError, match="--mmproj goes with --model"):
        build_settings({"mmproj": str(projector)}, environ={})
    with pytest.raises(ConfigError, match="projector file not found"):
        build_settings({"model": str(model), "mmproj": str(tmp_path / "nope.gguf")}, environ={})


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"max_queue": 0}, "--max-queue (LOCALXAI_MAX_QUEUE) must be at least 1"),
        ({"max_n": 0}, "--max-n"),
        ({"port": 99999}, "--port (LOCALXAI_PORT) must be between 1 and 65535"),
        ({"grpc_port": -1}, "--grpc-port"),
        ({"port": 8123, "grpc_port": 8123}, "--grpc-port must differ from --port (both are 8123)"),
        ({"threads": 0}, "--threads"),
        ({"top_k": -5}, "--top-k"),
        ({"model_id": ""}, "--model-id"),
        ({"model_id": "a b"}, "--model-id"),
        ({"parallel": 0}, "--parallel"),
        ({"max_body_mb": 0}, "--max-body-mb"),
        ({"body_timeout_s": 0}, "--body-timeout-s (LOCALXAI_BODY_TIMEOUT_S) must be more than 0"),
        ({"body_timeout_s": float("inf")}, "--body-timeout-s"),
        ({"request_timeout_s": float("nan")}, "--request-timeout-s"),
        ({"log_level": "loud"}, "--log-level"),
    ],
)
def test_every_flag_is_validated(flags: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        build_settings(flags, environ={})


def test_environment_values_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="LOCALXAI_MAX_QUEUE"):
        build_settings({}, environ={"LOCALXAI_MAX_QUEUE": "0"})


def test_model_path_messages_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a directory; pass the path of a \.gguf file"):
        build_settings({"model": str(tmp_path)}, environ={})
    with pytest.raises(ConfigError, match=r"looks like a Hugging Face model id.*hf:google/gemma-3-1b-it"):
        build_settings({"model": "google/gemma-3-1b-it"}, environ={})


def test_keep_alive_and_memory_budget_from_flags_and_environment() -> None:
    from localxai.runtime import memory_budget

    env = build_settings({}, {"LOCALXAI_KEEP_ALIVE_S": "7", "LOCALXAI_MEMORY_BUDGET_MIB": "900"})
    assert env.keep_alive_s == 7.0 and env.models.embedded[0].tuning.keep_alive_s == 7.0
    assert memory_budget(env) == 900 << 20
    assert memory_budget(build_settings({"memory_budget_mib": 0}, {})) is None  # no budget
    assert memory_budget(build_settings({}, {})) > 0  # three quarters of the machine's memory
    with pytest.raises(ConfigError, match="--keep-alive"):
        build_settings({"keep_alive_s": -1.0}, {})
