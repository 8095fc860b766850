"""`localxai pull / models / rm` and `serve --model hf:...`: the real `huggingface_hub` client against a
local stand-in for the Hub (tests/fake_hub.py, through HF_ENDPOINT) serving the tiny fixture GGUFs."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localxai.errors import ConfigError
from localxai.hub import HubRef, Plan, choose

from conftest import API_KEY, AUTH, free_port, http_server, start_server, stop_server
from fake_hub import FakeHub

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-vision"
MODEL = (FIXTURE / "model.gguf").read_bytes()
MMPROJ = (FIXTURE / "mmproj.gguf").read_bytes()
REPO = "acme/tiny-vision-GGUF"
# Past huggingface_hub's 10 MiB read chunk, so a transfer cut halfway has data on disk to resume from.
BIG = random.Random(7).randbytes(24 << 20)


def test_choice_follows_llama_cpp() -> None:
    files = ["README.md", "m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-F16.gguf", "mmproj-m-f16.gguf", "mmproj-m-Q8_0.gguf"]
    assert choose(files, None, "r") == Plan(("m-Q4_K_M.gguf",), "mmproj-m-Q8_0.gguf")  # projector closest in bits
    assert choose(files, "f16", "r") == Plan(("m-F16.gguf",), "mmproj-m-f16.gguf")  # tags ignore case
    no_q4 = [f for f in files if "Q4" not in f]
    assert choose(no_q4, None, "r").parts == ("m-Q8_0.gguf",)  # then Q8_0
    assert choose(["b-IQ2_M.gguf", "a-Q5_K_S.gguf", "imatrix.gguf"], None, "r") == Plan(("a-Q5_K_S.gguf",), None)
    with pytest.raises(ConfigError, match=r"r has no GGUF file tagged Q2_K; GGUF files: m-F16\.gguf"):
        choose(files, "Q2_K", "r")  # a tag that matches nothing is an error, not a fallback
    with pytest.raises(ConfigError, match="no GGUF model file"):
        choose(["README.md", "mmproj-x-f16.gguf"], None, "r")


def test_choice_takes_every_part_of_a_split_model_and_the_nearest_projector() -> None:
    split = [f"q8/m-Q8_0-0000{i}-of-00003.gguf" for i in (2, 1, 3)]
    files = [*split, "q8/mmproj-F16.gguf", "mmproj-Q8_0.gguf", "other/mmproj-Q8_0.gguf", "m-Q4_K_M.gguf"]
    plan = choose(files, "Q8_0", "r")
    assert plan.parts == tuple(sorted(split))
    assert plan.mmproj == "q8/mmproj-F16.gguf"  # its own folder first, however far in precision
    assert choose(files, None, "r") == Plan(("m-Q4_K_M.gguf",), "mmproj-Q8_0.gguf")  # never a sibling folder's
    with pytest.raises(ConfigError, match=r"lacks q8/m-Q8_0-00002-of-00003\.gguf"):
        choose([f for f in files if "00002" not in f], "Q8_0", "r")


def test_references_parse_and_name_the_model() -> None:
    assert HubRef.parse("hf:ggml-org/gemma-3-1b-it-GGUF") == HubRef("ggml-org/gemma-3-1b-it-GGUF", None)
    ref = HubRef.parse("hf:Qwen/Qwen2.5-3B-Instruct-GGUF:q4_k_m")
    assert (ref.tag, ref.model_id, str(ref)) == (
        "q4_k_m",
        "Qwen2.5-3B-Instruct",
        "hf:Qwen/Qwen2.5-3B-Instruct-GGUF:q4_k_m",
    )
    for bad in ("hf:nothing", "hf:a/b:", "hf:a/b:c:d", "hf:/b", "hf:a--b/c", "hf:org/..", "hf:org/x.git", "hf:a/b-"):
        with pytest.raises(ConfigError, match="expected hf:ORG/REPO"):
            HubRef.parse(bad)


def test_a_header_of_arrays_nested_without_end_is_a_bad_file(tmp_path: Path) -> None:
    import struct

    from localxai.gguf_meta import NotGGUF, read_info

    crafted = tmp_path / "deep.gguf"
    key = b"k"
    nested = struct.pack("<IQ", 9, 1) * 100_000  # an array of one array of one array...
    crafted.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, len(key)) + key + struct.pack("<I", 9) + nested)
    with pytest.raises(NotGGUF, match="nested more than 8 deep"):
        read_info(crafted)


@pytest.fixture
def hub() -> Iterator[tuple[FakeHub, str]]:
    fake = FakeHub(
        repos={
            REPO: {
                "README.md": b"# tiny\n",
                "tiny-vision-F16.gguf": MODEL,
                "tiny-vision-Q8_0.gguf": MODEL,
                "tiny-vision-Q4_K_M.gguf": MODEL,
                "mmproj-tiny-vision-f16.gguf": MMPROJ,
                "mmproj-tiny-vision-Q8_0.gguf": MMPROJ,
            },
            "acme/big-GGUF": {"big-Q4_K_M.gguf": BIG},
        }
    )
    with http_server(fake.handler()) as url:
        yield fake, url


@pytest.fixture
def env(hub: tuple[FakeHub, str], tmp_path: Path) -> dict[str, str]:
    """The hub client pointed at the fake Hub, with its own cache; nothing from the caller's HF_* setup."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LOCALXAI_"))}
    return {**keep, "HF_ENDPOINT": hub[1], "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}


def localxai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "localxai", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def pulled(done: subprocess.CompletedProcess[str]) -> dict[str, Path]:
    assert done.returncode == 0, done.stderr
    return {kind: Path(path) for kind, path in (line.split(maxsplit=1) for line in done.stdout.splitlines())}


def test_pull_fetches_the_default_quantisation_and_its_projector(env: dict[str, str]) -> None:
    files = pulled(localxai(env, "pull", f"hf:{REPO}"))
    assert files["model"].name == "tiny-vision-Q4_K_M.gguf"
    assert files["mmproj"].name == "mmproj-tiny-vision-Q8_0.gguf"
    assert files["model"].read_bytes() == MODEL and files["mmproj"].read_bytes() == MMPROJ
    assert str(files["model"]).startswith(env["HF_HOME"])  # the hub's own cache, shared with its other users
    f16 = pulled(localxai(env, "pull", f"hf:{REPO}:f16"))
    assert (f16["model"].name, f16["mmproj"].name) == ("tiny-vision-F16.gguf", "mmproj-tiny-vision-f16.gguf")


def test_files_come_from_the_commit_listed_and_a_cached_model_is_not_fetched_again(
    hub: tuple[FakeHub, str], env: dict[str, str]
) -> None:
    fake, _ = hub
    commit = fake.commit(REPO)
    files = pulled(localxai(env, "pull", f"hf:{REPO}"))
    resolves = [path for _, path, _ in fake.log if "/resolve/" in path]
    assert resolves and all(f"/resolve/{commit}/" in path for path in resolves)  # not `main`: what was listed
    assert files["model"].parent.name == commit
    assert (files["model"].parents[2] / "refs" / "main").read_text() == commit  # the hub's other users find it
    fake.log.clear()
    assert pulled(localxai(env, "pull", f"hf:{REPO}")) == files
    assert [path for _, path, _ in fake.log if "/resolve/" in path] == []  # the listing only


def test_a_cached_file_is_hashed_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    from localxai import hub

    blob = tmp_path / "m.gguf"
    blob.write_bytes(MODEL)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(blob))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(blob))
    hashed = []
    monkeypatch.setattr(hub, "_matches", lambda path, digest: hashed.append(path) or True)
    digest = ("sha256", hashlib.sha256(MODEL).hexdigest())
    assert hub._download(HubRef(REPO), "m.gguf", "c0ffee", digest, "all", None) == blob
    assert hashed == [blob]


def test_an_interrupted_download_resumes_where_it_broke(hub: tuple[FakeHub, str], env: dict[str, str]) -> None:
    fake, _ = hub
    fake.cut_once.add("big-Q4_K_M.gguf")
    files = pulled(localxai(env, "pull", "hf:acme/big-GGUF"))
    ranges = fake.downloads("big-Q4_K_M.gguf")
    assert len(ranges) == 2 and ranges[0] is None
    assert ranges[1] is not None and int(ranges[1].removeprefix("bytes=").rstrip("-")) > 0  # not from byte 0
    assert hashlib.sha256(files["model"].read_bytes()).digest() == hashlib.sha256(BIG).digest()
    assert "mmproj" not in files


def test_a_corrupt_file_is_detected_and_removed(hub: tuple[FakeHub, str], env: dict[str, str]) -> None:
    fake, _ = hub
    fake.corrupt.add("tiny-vision-Q4_K_M.gguf")  # right size, one byte wrong: only the sha256 can tell
    done = localxai(env, "pull", f"hf:{REPO}")
    assert done.returncode == 1
    assert "tiny-vision-Q4_K_M.gguf from acme/tiny-vision-GGUF does not match the sha256" in done.stderr
    assert not list(Path(env["HF_HOME"]).rglob("tiny-vision-Q4_K_M.gguf"))
    fake.corrupt.clear()
    files = pulled(localxai(env, "pull", f"hf:{REPO}"))
    # A cached copy damaged on disk: `pull` checks every file and fetches that one again.
    blob = files["model"].resolve()
    blob.write_bytes(b"\0" + MODEL[1:])
    before = len(fake.downloads("tiny-vision-Q4_K_M.gguf"))
    done = localxai(env, "pull", f"hf:{REPO}")
    assert pulled(done)["model"].read_bytes() == MODEL
    assert "does not match its sha256: downloading it again" in done.stderr
    assert len(fake.downloads("tiny-vision-Q4_K_M.gguf")) == before + 1


def test_offline_uses_the_cache_and_names_what_is_missing(hub: tuple[FakeHub, str], env: dict[str, str]) -> None:
    fake, _ = hub
    online = pulled(localxai(env, "pull", f"hf:{REPO}"))
    fake.log.clear()
    assert pulled(localxai({**env, "HF_HUB_OFFLINE": "1"}, "pull", f"hf:{REPO}")) == online
    assert pulled(localxai(env, "pull", "--offline", f"hf:{REPO}:q4_k_m")) == online
    assert fake.log == []  # not one request
    unreachable = localxai({**env, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}, "pull", f"hf:{REPO}")
    assert pulled(unreachable) == online and "cannot reach the Hugging Face Hub" in unreachable.stderr
    missing_tag = localxai(env, "pull", "--offline", f"hf:{REPO}:Q8_0")
    assert missing_tag.returncode == 1
    assert "the cached copy of hf:acme/tiny-vision-GGUF has no GGUF file tagged Q8_0" in missing_tag.stderr
    assert f"run `localxai pull hf:{REPO}:Q8_0` with network" in missing_tag.stderr
    never = localxai({**env, "HF_HUB_OFFLINE": "1"}, "pull", "hf:acme/big-GGUF")
    assert never.returncode == 1 and "hf:acme/big-GGUF is not in the cache" in never.stderr


def test_a_missing_repo_is_a_clear_error(env: dict[str, str]) -> None:
    done = localxai(env, "pull", "hf:acme/no-such-GGUF")
    assert done.returncode == 1
    assert "localxai: no model repository acme/no-such-GGUF on the Hugging Face Hub" in done.stderr
    wrong_tag = localxai(env, "pull", f"hf:{REPO}:Q2_K")
    assert wrong_tag.returncode == 1
    assert "hf:acme/tiny-vision-GGUF has no GGUF file tagged Q2_K; GGUF files: mmproj-tiny" in wrong_tag.stderr
    bad = localxai(env, "pull", "hf:tiny-vision-GGUF")
    assert bad.returncode == 1 and "expected hf:ORG/REPO or hf:ORG/REPO:QUANT" in bad.stderr


def test_ctrl_c_in_a_pull_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from localxai import cli

    def interrupted(text: str, offline: bool) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "pull_model", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pull", "--data-dir", str(tmp_path), f"hf:{REPO}"])
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "\n"


def test_models_lists_and_rm_removes(env: dict[str, str], tmp_path: Path) -> None:
    pulled(localxai(env, "pull", f"hf:{REPO}"))
    pulled(localxai(env, "pull", f"hf:{REPO}:F16"))
    state = ["--data-dir", str(tmp_path / "state")]
    listing = localxai(env, "models", *state)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["model", "quant", "size", "context", "vision", "template", "path"]
    assert lines[1].startswith("gemma-3-270m (embedded)")
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {f"hf:{REPO}:F16", f"hf:{REPO}:Q4_K_M"}
    # The fixture is F16 whatever its file is called: the quantisation column reads the GGUF header.
    assert rows[f"hf:{REPO}:Q4_K_M"][1:7] == ["F16", "212.6", "KB", "8192", "yes", "built-in"]
    removed = localxai(env, "rm", f"hf:{REPO}:Q4_K_M")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.split() == ["removed", str(pulled_path(env, "tiny-vision-Q4_K_M.gguf"))]  # mmproj stays
    assert f"hf:{REPO}:Q4_K_M" not in localxai(env, "models", *state).stdout
    assert localxai(env, "rm", f"hf:{REPO}").returncode == 0
    assert REPO not in localxai(env, "models", *state).stdout
    again = localxai(env, "rm", f"hf:{REPO}")
    assert again.returncode == 1 and "acme/tiny-vision-GGUF is not in the Hugging Face cache" in again.stderr


def pulled_path(env: dict[str, str], name: str) -> Path:
    snapshots = Path(env["HF_HOME"]) / "hub" / "models--acme--tiny-vision-GGUF" / "snapshots"
    (commit,) = snapshots.iterdir()
    return commit / name


def test_serve_pulls_an_hf_model_and_serves_it(hub: tuple[FakeHub, str], env: dict[str, str], tmp_path: Path) -> None:
    fake, _ = hub
    server = start_server(tmp_path, "--model", f"hf:{REPO}", "--api-key", API_KEY, "--ctx-size", "512", env=env)
    try:
        assert_serves_tiny_vision(server.v1)
    finally:
        stop_server(server)
    # Offline, from a models file: the cached copy, no request to the Hub.
    fake.log.clear()
    config = tmp_path / "models.toml"
    config.write_text(f'[[models]]\nid = "tiny"\npath = "hf:{REPO}:Q4_K_M"\nctx_size = 512\n')
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    server = start_server(tmp_path, "--config", str(config), "--api-key", API_KEY, env=offline)
    try:
        assert_serves_tiny_vision(server.v1, "tiny")
    finally:
        stop_server(server)
    assert fake.log == []


def assert_serves_tiny_vision(v1: str, model: str = "tiny-vision") -> None:
    info = httpx.get(f"{v1}/language-models/{model}", headers=AUTH, timeout=10).json()
    assert info["input_modalities"] == ["text", "image"]  # the projector was found and loaded
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    reply = httpx.post(f"{v1}/chat/completions", json=body, headers=AUTH, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1


def test_cached_models_are_served_by_name_without_a_restart(env: dict[str, str], tmp_path: Path) -> None:
    """A model in the download cache is listed (not loaded) and served by its repo name beside the default
    model; one pulled while the server runs is servable within a rescan, no restart."""
    import time

    pulled(localxai(env, "pull", f"hf:{REPO}"))
    server = start_server(tmp_path, "--api-key", API_KEY, "--ctx-size", "512", "--parallel", "2", env=env)
    try:
        models = {m["id"]: m["loaded"] for m in httpx.get(f"{server.v1}/models", headers=AUTH).json()["data"]}
        assert models == {"gemma-3-270m": True, "tiny-vision": False}
        assert_serves_tiny_vision(server.v1)
        assert httpx.get(f"{server.v1}/models/tiny-vision", headers=AUTH).json()["loaded"] is True
        # Another quantisation pulled now: both are then named by their tag.
        pulled(localxai(env, "pull", f"hf:{REPO}:f16"))
        deadline = time.monotonic() + 40
        while "tiny-vision:f16" not in (
            ids := [m["id"] for m in httpx.get(f"{server.v1}/models", headers=AUTH).json()["data"]]
        ):
            assert time.monotonic() < deadline, ids
            time.sleep(0.5)
        assert_serves_tiny_vision(server.v1, "tiny-vision:f16")
        assert "tiny-vision" in ids  # the name it was served under stays
    finally:
        stop_server(server)


def pull_lines(server_url: str, model: str, headers: dict[str, str] = AUTH) -> list[dict[str, Any]]:
    import json

    with httpx.stream("POST", f"{server_url}/models/pull", json={"model": model}, headers=headers, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in r.iter_lines() if line]


def test_a_running_server_pulls_serves_and_removes_models(env: dict[str, str], tmp_path: Path) -> None:
    """POST /models/pull streams its progress and serves the model at once; `localxai models` shows what
    the running server serves it as; removing a model a stream holds waits for the stream (never cuts it),
    then it is no longer served; files deleted by hand leave the list within a rescan."""
    import threading
    import time

    server = start_server(tmp_path, "--api-key", API_KEY, "--ctx-size", "512", "--parallel", "2", env=env)
    try:
        lines = pull_lines(server.base_url, f"hf:{REPO}")
        assert lines[0] == {"status": "pulling manifest"}
        files = {line["file"]: line for line in lines if line["status"] == "downloading"}
        assert set(files) == {"tiny-vision-Q4_K_M.gguf", "mmproj-tiny-vision-Q8_0.gguf"}
        assert files["tiny-vision-Q4_K_M.gguf"]["completed"] == files["tiny-vision-Q4_K_M.gguf"]["total"] == len(MODEL)
        assert {"status": "verifying", "file": "tiny-vision-Q4_K_M.gguf"} in lines
        done = lines[-1]
        assert done["status"] == "success" and done["model"]["id"] == "tiny-vision"
        assert done["model"]["status"] == {"value": "unloaded"}
        assert done["model"]["path"] == str(pulled_path(env, "tiny-vision-Q4_K_M.gguf"))
        assert_serves_tiny_vision(server.v1)  # at once: no rescan waited for

        listing = localxai(env, "models", "--url", server.v1, "--api-key", API_KEY, "--data-dir", str(tmp_path / "s"))
        assert listing.returncode == 0, listing.stderr
        header, *rows = listing.stdout.splitlines()
        assert header.split()[:3] == ["served", "as", "model"]
        assert any(row.startswith("tiny-vision (loaded)") and f"hf:{REPO}:Q4_K_M" in row for row in rows), rows

        # Not a model, a reference the Hub does not know, a bad reference, a key of no operator.
        assert pull_lines(server.base_url, "hf:acme/big-GGUF")[-1]["error"].startswith(
            "hf:acme/big-GGUF was pulled to "
        )
        missing = pull_lines(server.base_url, "hf:acme/nothing-GGUF")[-1]
        assert missing["code"] == "Client specified an invalid argument" and "no model repository" in missing["error"]
        bad = httpx.post(f"{server.base_url}/models/pull", json={"model": "hf:nope"}, headers=AUTH)
        assert bad.status_code == 400 and "expected hf:ORG/REPO" in bad.json()["error"]
        whole = httpx.post(f"{server.base_url}/models/pull", json={"model": f"hf:{REPO}:F16", "stream": False},
                           headers=AUTH, timeout=120)  # fmt: skip
        assert whole.status_code == 200 and whole.json()["model"]["id"] == "tiny-vision:f16", whole.text

        # Removing a model while a stream holds it: the removal waits, the stream ends whole.
        body = {"model": "tiny-vision", "messages": [{"role": "user", "content": "Count from 1 to 100."}],
                "max_tokens": 200, "temperature": 0, "stream": True}  # fmt: skip
        removed: list[httpx.Response] = []
        with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, headers=AUTH, timeout=60) as stream:
            chunks = stream.iter_lines()
            next(line for line in chunks if line.startswith("data: {"))
            removal = threading.Thread(target=lambda: removed.append(httpx.post(
                f"{server.base_url}/models/remove", json={"model": f"hf:{REPO}:Q4_K_M"}, headers=AUTH,
                timeout=60)))  # fmt: skip
            removal.start()
            rest = list(chunks)
        removal.join()
        assert any('"finish_reason":' in line and '"finish_reason":null' not in line for line in rest), rest[-3:]
        assert removed[0].status_code == 200, removed[0].text
        assert removed[0].json()["removed"] == [str(pulled_path(env, "tiny-vision-Q4_K_M.gguf"))]
        ids = [m["id"] for m in httpx.get(f"{server.v1}/models", headers=AUTH).json()["data"]]
        assert "tiny-vision" not in ids and "tiny-vision:f16" in ids
        gone = httpx.post(f"{server.v1}/chat/completions", json={**body, "stream": False}, headers=AUTH)
        assert gone.status_code == 404

        # `localxai rm` of a model the server serves goes through the server (it unloads, then removes).
        assert_serves_tiny_vision(server.v1, "tiny-vision:f16")
        rm = localxai(env, "rm", f"hf:{REPO}:F16", "--url", server.v1, "--api-key", API_KEY)
        assert rm.returncode == 0, rm.stderr
        assert rm.stdout.split() == ["removed", str(pulled_path(env, "tiny-vision-F16.gguf")),
                                     "removed", str(pulled_path(env, "mmproj-tiny-vision-f16.gguf"))]  # fmt: skip
        assert "tiny-vision:f16" not in [m["id"] for m in httpx.get(f"{server.v1}/models", headers=AUTH).json()["data"]]

        # Files deleted behind the server's back: the model leaves the list at the next rescan.
        again = pull_lines(server.base_url, f"hf:{REPO}")[-1]
        assert again["model"]["id"] == "tiny-vision"
        assert localxai(env, "rm", f"hf:{REPO}", "--url", "http://127.0.0.1:9/v1").returncode == 1  # no server there
        script = f"from localxai.hub import HubRef, remove; remove(HubRef.parse('hf:{REPO}'))"
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
        deadline = time.monotonic() + 40
        while "tiny-vision" in [m["id"] for m in httpx.get(f"{server.v1}/models", headers=AUTH).json()["data"]]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        stop_server(server)
