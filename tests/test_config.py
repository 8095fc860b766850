"""The models config file: what it accepts, and clear errors for what it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from localxai.config import load_config
from localxai.errors import ConfigError
from localxai.settings import build_settings

GOOD = """
[[models]]
id = "local"
engine = "llamacpp"
parallel = 2
aliases = ["grok-4"]

[[models]]
id = "big"
engine = "upstream"
base_urls = ["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]
upstream_model = "Qwen/Qwen3-32B"
api_key_env = "BIG_KEY"
reasoning = true
reasoning_efforts = ["low", "high"]
vision = true
background_priority = -5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_good_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), {"BIG_KEY": "s3cret"})
    assert [m.id for m in config.embedded] == ["local"] and config.embedded[0].tuning.parallel == 2
    [big] = config.upstream
    assert big.base_urls == ("http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1")
    assert big.api_key == "s3cret" and big.reasoning and big.vision and big.reasoning_efforts == ("low", "high")
    assert big.background_priority == -5
    assert config.aliases == (("grok-4", "local"),)


def test_embedded_vision_model(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "mmproj.gguf").write_bytes(b"GGUF")
    text = f'[[models]]\nid = "eyes"\npath = "{tmp_path}/m.gguf"\nmmproj = "{tmp_path}/mmproj.gguf"\n'
    [eyes] = load_config(write(tmp_path, text), {}).embedded
    assert eyes.path == tmp_path / "m.gguf" and eyes.mmproj == tmp_path / "mmproj.gguf"


def test_flags_and_config_files_give_the_same_models(tmp_path: Path) -> None:
    """One shape for both: the flags describe one model as a config file would."""
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    flags = build_settings({"model": str(model), "parallel": 3, "ctx_size": 1024, "reasoning": True}, environ={})
    text = f'[[models]]\nid = "tiny"\npath = "{model}"\nreasoning = true\n'
    from_file = build_settings({"config": str(write(tmp_path, text)), "parallel": 3, "ctx_size": 1024}, environ={})
    assert flags.models == from_file.models
    [tiny] = flags.models.embedded
    assert tiny.id == "tiny" and tiny.reasoning is not None
    assert tiny.tuning.parallel == 3 and tiny.tuning.ctx_size == 1024


def test_config_entries_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(write(tmp_path, f'[[models]]\nid = "x"\npath = "{tmp_path}"\n'), {})
    with pytest.raises(ConfigError, match="'parallel' must be a positive number"):
        load_config(write(tmp_path, '[[models]]\nid = "x"\nparallel = "4"\n'), {})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (GOOD, "BIG_KEY"),  # the key's environment variable is missing
        ('[[models]]\nid = "x"\nengine = "upstream"\nbase_urls = []\n', "base_urls is empty"),
        ('[[models]]\nid = "x"\nengine = "upstream"\nbase_urls = ["u"]\nbackground_priority = "hi"\n', "an integer"),
        ('[[models]]\nengine = "llamacpp"\n', "'id'"),
        ('[[models]]\nid = "x"\nengine = "magic"\n', "engine must be"),
        ('[[models]]\nid = "x"\nmmproj = "p.gguf"\n', "mmproj needs the path"),
        ("models = [", "cannot read"),
        ("", "no [[models]]"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_config(write(tmp_path, text), {})


def test_single_bracket_models_table_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models]\nid = "m"\nengine = "llamacpp"\n')
    with pytest.raises(ConfigError, match=r"\[\[models\]\] table \(two brackets\)"):
        load_config(path, {})


def test_building_the_settings_never_downloads(tmp_path: Path) -> None:
    """An hf: model, from a flag or the config file, is a spec with a source: the runtime pulls it at
    start (hub.pulled), so building the settings reads and checks only, offline or not."""

    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "LOCALXAI_DATA_DIR": str(tmp_path)}
    [flag] = build_settings({"model": "hf:acme/tiny-GGUF:Q4_K_M"}, env).models.embedded
    assert flag.source == "hf:acme/tiny-GGUF:Q4_K_M" and flag.path is None and flag.id
    text = '[[models]]\nid = "t"\npath = "hf:acme/tiny-GGUF"\n'
    [entry] = load_config(write(tmp_path, text), {}).embedded
    assert entry.source == "hf:acme/tiny-GGUF" and entry.path is None
    with pytest.raises(ConfigError, match="expected hf:ORG/REPO"):
        load_config(write(tmp_path, '[[models]]\nid = "t"\npath = "hf:a/b:c:d"\n'), {})
