"""GGUF models from the Hugging Face Hub: `hf:ORG/REPO[:QUANT]` to local files, in the hub's own cache.

Which file a reference means follows llama.cpp's `-hf` (docs/models.md): the quantisation tag, else
Q4_K_M, else Q8_0, else the first GGUF; every part of a split GGUF; the repo's `mmproj` file closest in
precision. Downloads go through `huggingface_hub` (progress bar, retries that resume with a Range
request, the cache layout, HF_TOKEN); every file is then checked against the sha256 the Hub lists.
Over 400 lines: the file choice, split GGUFs, projectors and the offline cache are one rule set, kept
together so it can be read against llama.cpp's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localxai.errors import ConfigError
from localxai.specs import ModelsConfig

if TYPE_CHECKING:
    from huggingface_hub import CachedRevisionInfo, DeleteCacheStrategy
    from tqdm import tqdm

log = logging.getLogger("localxai.hub")

PREFIX = "hf:"
DEFAULT_TAGS = ("Q4_K_M", "Q8_0")  # llama.cpp's order when no tag is given; then the first GGUF
REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
TAG = re.compile(r"[\w.-]+")
SPLIT = re.compile(r"(.+)-(\d{5})-of-(\d{5})", re.I)
QUANT_SUFFIX = re.compile(r"[-.]([A-Z0-9_]+)$", re.I)
NOT_MODELS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")  # companions, not models
PROGRESS_EVERY_S = 0.25  # a pull's progress events, at most this often per file (and each file's last)

Progress = Callable[[dict[str, Any]], None]  # a pull's events: {"status": ..., and per file "file", "total", ...}


@dataclass(frozen=True)
class HubRef:
    repo: str  # ORG/REPO
    tag: str | None = None  # a quantisation such as Q4_K_M, matched case-insensitively

    @classmethod
    def parse(cls, text: str) -> HubRef:
        body = text.removeprefix(PREFIX)
        repo, _, tag = body.partition(":")
        if not REPO.fullmatch(repo) or (tag and not TAG.fullmatch(tag)) or body.endswith(":") or not _valid(repo):
            raise ConfigError(
                f"expected hf:ORG/REPO or hf:ORG/REPO:QUANT (e.g. hf:ggml-org/gemma-3-1b-it-GGUF), got {text!r}"
            )
        return cls(repo, tag or None)

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo}" + (f":{self.tag}" if self.tag else "")

    @property
    def model_id(self) -> str:
        """The id clients use by default: the repo's name without its -GGUF suffix."""
        name = self.repo.split("/", 1)[1]
        return re.sub(r"[-_.]gguf$", "", name, flags=re.I) or name


def _valid(repo: str) -> bool:
    """The hub client's own rules (no `--` or `..`, no leading or trailing `-`/`.`, no `.git`), checked here so
    a bad id is a usage error rather than a ValueError from deep inside a download."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        return False
    return True


def is_hub_ref(value: object) -> bool:
    return str(value).startswith(PREFIX)


@dataclass(frozen=True)
class Plan:
    """The files of one model in a repo: its parts (one, or every part of a split GGUF) and its projector."""

    parts: tuple[str, ...]
    mmproj: str | None

    @property
    def files(self) -> tuple[str, ...]:
        return self.parts + ((self.mmproj,) if self.mmproj else ())


@dataclass(frozen=True)
class LocalModel:
    ref: HubRef
    path: Path  # the first part: llama.cpp loads the others from beside it
    mmproj: Path | None


def choose(files: Iterable[str], tag: str | None, where: str) -> Plan:
    """llama.cpp's `-hf` choice among a repo's file names (sorted first, so the choice is stable)."""
    names = sorted(files)
    model = _first_model(names, tag)
    if model is None:
        ggufs = [n for n in names if n.endswith(".gguf")]
        wanted = f"no GGUF file tagged {tag}" if tag else "no GGUF model file"
        listing = f"; GGUF files: {', '.join(ggufs)}" if ggufs else ""
        raise ConfigError(f"{where} has {wanted}{listing}")
    return Plan(_parts(names, model, where), _mmproj(names, model))


def _is_model(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".gguf") and not any(word in base for word in NOT_MODELS)


def _split(name: str) -> tuple[str, int, int]:
    """(prefix with the tag, part index, part count) of `name` (a .gguf file)."""
    stem = name.removesuffix(".gguf")
    match = SPLIT.fullmatch(stem)
    return (match[1], int(match[2]), int(match[3])) if match else (stem, 1, 1)


def _first_model(names: Sequence[str], tag: str | None) -> str | None:
    candidates = [n for n in names if _is_model(n) and _split(n)[1] == 1]
    for wanted in (tag,) if tag else DEFAULT_TAGS:
        pattern = re.compile(re.escape(wanted) + r"[.-]", re.I)
        for name in candidates:
            if pattern.search(name):
                return name
    return None if tag or not candidates else candidates[0]


def _parts(names: Sequence[str], first: str, where: str) -> tuple[str, ...]:
    prefix, _, count = _split(first)
    if count == 1:
        return (first,)
    parts = {_split(n)[1]: n for n in names if n.endswith(".gguf") and _split(n)[::2] == (prefix, count)}
    missing = [f"{prefix}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1) if i not in parts]
    if missing:
        raise ConfigError(f"{where}: split model {first} lacks {', '.join(missing)}")
    return tuple(parts[i] for i in range(1, count + 1))


def _bits(name: str) -> int:
    """Q4_K_M -> 4, F16 -> 16, Q8_0 -> 8: the precision a file name states (0 when none)."""
    match = QUANT_SUFFIX.search(_split(name)[0])
    digits = re.match(r"\D*(\d+)", match[1]) if match else None
    return int(digits[1]) if digits else 0


def _mmproj(names: Sequence[str], model: str) -> str | None:
    """The projector in the model's folder or the nearest folder above, closest in precision to the model."""
    model_dir = model.split("/")[:-1]
    best: tuple[int, int] | None = None
    chosen = None
    for name in names:
        if not name.endswith(".gguf") or "mmproj" not in name:
            continue
        folder = name.split("/")[:-1]
        if model_dir[: len(folder)] != folder:
            continue
        rank = (-len(folder), abs(_bits(name) - _bits(model)))
        if best is None or rank < best:
            best, chosen = rank, name
    return chosen


def pulled(models: ModelsConfig, offline: bool = False) -> ModelsConfig:
    """`models` with every embedded model's hf: `source` pulled (or found in the cache): its path, and its
    projector unless one was given. Runs at the composition root, once the settings are built."""
    embedded = []
    for model in models.embedded:
        if model.source is not None:
            local = pull(HubRef.parse(model.source), offline=offline)
            model = replace(model, path=local.path, mmproj=model.mmproj or local.mmproj, source=None)
        embedded.append(model)
    return replace(models, embedded=tuple(embedded))


def pull(ref: HubRef, offline: bool = False, verify: str = "new", progress: Progress | None = None) -> LocalModel:
    """The model's files in the hub's cache, downloaded if needed; `verify`: "new" (files fetched now) or "all".
    `progress` (called from this thread) gets events instead of the terminal's progress bars.

    Offline (or when the Hub cannot be reached) the choice is made among the cached files."""
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # the hub client's transport: one line per request
    if offline:
        return _from_cache(ref, "offline mode (--offline or HF_HUB_OFFLINE=1)")
    if progress is not None:
        progress({"status": "pulling manifest"})
    try:
        plan, hashes, commit = _remote_plan(ref)
    except _Unreachable as exc:
        log.warning("cannot reach the Hugging Face Hub (%s): looking in the local cache", exc)
        return _from_cache(ref, f"the Hub is unreachable ({exc})")
    paths = {name: _download(ref, name, commit, hashes.get(name), verify, progress) for name in plan.files}
    if commit:
        _point_main_at(paths[plan.parts[0]], plan.parts[0], commit)
    return LocalModel(ref, paths[plan.parts[0]], paths[plan.mmproj] if plan.mmproj else None)


class _Unreachable(Exception):
    pass


def _remote_plan(ref: HubRef) -> tuple[Plan, dict[str, tuple[str, str]], str | None]:
    """The plan from the repo's listing, each file's expected digest ("sha256"|"git-sha1", hex), and the
    commit listed: the files are fetched at that commit, so they are the ones the digests describe."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(ref.repo, files_metadata=True)
    except GatedRepoError:
        raise ConfigError(f"{ref.repo} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"no model repository {ref.repo} on the Hugging Face Hub (or it is private: set HF_TOKEN)"
        ) from None
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code < 500:
            raise ConfigError(f"the Hugging Face Hub refused {ref.repo}: {_first_line(exc)}") from None
        raise _Unreachable(_first_line(exc)) from None
    except Exception as exc:  # the hub client's transport errors (connect, timeout) have no common public base
        if _is_transport_error(exc):
            raise _Unreachable(_first_line(exc)) from None
        raise
    hashes: dict[str, tuple[str, str]] = {}
    for sibling in info.siblings or ():
        if sibling.lfs is not None:
            hashes[sibling.rfilename] = ("sha256", sibling.lfs.sha256)
        elif sibling.blob_id:
            hashes[sibling.rfilename] = ("git-sha1", sibling.blob_id)
    plan = choose((s.rfilename for s in info.siblings or ()), ref.tag, f"{PREFIX}{ref.repo}")
    return plan, hashes, info.sha


def _is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.split(".")[0] in (
        "httpx",
        "httpx2",
        "httpcore",
    )


def _download(
    ref: HubRef, name: str, commit: str | None, digest: tuple[str, str] | None, verify: str, progress: Progress | None
) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    cached = try_to_load_from_cache(ref.repo, name, revision=commit)
    cached_path = Path(cached) if isinstance(cached, str) else None
    if cached_path is not None and digest is not None and verify == "all" and not _matches(cached_path, digest):
        log.warning("%s in the cache does not match its %s: downloading it again", name, digest[0])
        _remove(cached_path)
        cached_path = None
    try:
        bar = None if progress is None else _progress_bar(progress, name)
        path = Path(hf_hub_download(ref.repo, name, revision=commit, tqdm_class=bar))
    except HfHubHTTPError as exc:
        raise ConfigError(f"downloading {name} from {ref.repo} failed: {_first_line(exc)}") from None
    except OSError as exc:  # the size check ("Consistency check failed"), disk full
        raise ConfigError(f"downloading {name} from {ref.repo} failed: {_first_line(exc)}") from None
    except Exception as exc:
        if _is_transport_error(exc):
            raise ConfigError(f"downloading {name} from {ref.repo} failed: {_first_line(exc)}") from None
        raise
    fresh = path != cached_path  # a cached copy was checked above (verify "all") or is trusted ("new")
    if progress is not None:
        size = path.stat().st_size
        progress({"status": "downloading", "file": name, "total": size, "completed": size})
        if digest is not None and fresh:
            progress({"status": "verifying", "file": name})
    if digest is not None and fresh and not _matches(path, digest):
        _remove(path)
        raise ConfigError(
            f"{name} from {ref.repo} does not match the {digest[0]} the Hub lists: the corrupt copy was removed; "
            f"pull again"
        )
    return path


def _progress_bar(progress: Progress, name: str) -> type[tqdm]:
    """A tqdm class the hub client draws one file's download with: it reports to `progress` and draws nothing."""
    from tqdm import tqdm

    class Reporting(tqdm):  # type: ignore[misc,type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done, self.size, self.sent = kwargs.get("initial") or 0, kwargs.get("total"), 0.0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += n or 0
            now = time.monotonic()
            if now - self.sent >= PROGRESS_EVERY_S:
                self.sent = now
                progress({"status": "downloading", "file": name, "total": self.size, "completed": int(self.done)})
            return super().update(n)

    return Reporting


def _point_main_at(path: Path, name: str, commit: str) -> None:
    """Files fetched by commit leave the cache's `main` ref alone: point it at the commit listed as `main`,
    as a download by branch would, so the hub's other users (and offline use) find this snapshot."""
    snapshot = path
    for _ in name.split("/"):
        snapshot = snapshot.parent
    if snapshot.name != commit or snapshot.parent.name != "snapshots":
        return
    ref = snapshot.parent.parent / "refs" / "main"
    try:
        if not ref.is_file() or ref.read_text().strip() != commit:
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(commit)
    except OSError as exc:  # a read-only shared cache: the files are there all the same
        log.warning("cannot update %s: %s", ref, exc)


def _matches(path: Path, digest: tuple[str, str]) -> bool:
    kind, expected = digest
    if kind == "sha256":
        hasher = hashlib.sha256()
    else:  # a git blob id: sha1 over "blob <size>\0" and the content
        hasher = hashlib.sha1(usedforsecurity=False)
        hasher.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest() == expected.lower()


def _remove(path: Path) -> None:
    """A cached file and its blob: the next download starts clean."""
    blob = path.parent / os.readlink(path) if path.is_symlink() else path  # the repo's blob, not a shared store
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# The cache: what is there, offline choice, removal.


def cached_revision(repo: str) -> CachedRevisionInfo | None:
    """The cached snapshot of `repo` that `main` points to (else the newest one)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return None
    for repo_info in cache.repos:
        if repo_info.repo_type == "model" and repo_info.repo_id == repo and repo_info.revisions:
            revisions = sorted(repo_info.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
            return revisions[-1]
    return None


def _from_cache(ref: HubRef, why: str) -> LocalModel:
    from huggingface_hub import constants

    revision = cached_revision(ref.repo)
    if revision is None:
        raise ConfigError(
            f"{why}: {ref} is not in the cache ({constants.HF_HUB_CACHE}); run `localxai pull {ref}` with network"
        )
    names = {f.file_path.relative_to(revision.snapshot_path).as_posix() for f in revision.files}
    try:
        plan = choose(names, ref.tag, f"the cached copy of {PREFIX}{ref.repo}")
    except ConfigError as exc:
        raise ConfigError(f"{why}: {exc}; run `localxai pull {ref}` with network") from None
    root = revision.snapshot_path
    return LocalModel(ref, root / plan.parts[0], root / plan.mmproj if plan.mmproj else None)


@dataclass(frozen=True)
class CachedModel:
    ref: HubRef  # with the tag its file name carries
    path: Path
    mmproj: Path | None
    size: int  # bytes, every part
    missing: tuple[str, ...]  # parts of a split model not in the cache


def cached_models() -> list[CachedModel]:
    """Every GGUF model in the hub's cache (each revision that a ref points to, else the newest)."""
    out = []
    for repo, revision in _cached_revisions():
        sizes = {f.file_path.relative_to(revision.snapshot_path).as_posix(): f.size_on_disk for f in revision.files}
        for name in sorted(sizes):
            if not _is_model(name) or _split(name)[1] != 1:
                continue
            prefix, _, count = _split(name)
            parts = [n for n in sizes if n.endswith(".gguf") and _split(n)[::2] == (prefix, count)]
            missing = tuple(
                f"{prefix}-{i:05d}-of-{count:05d}.gguf"
                for i in range(1, count + 1)
                if i not in {_split(p)[1] for p in parts}
            )
            tag = QUANT_SUFFIX.search(prefix)
            mmproj = _mmproj(sorted(sizes), name)
            out.append(
                CachedModel(
                    HubRef(repo, tag[1].upper() if tag else None),
                    revision.snapshot_path / name,
                    revision.snapshot_path / mmproj if mmproj else None,
                    sum(sizes[p] for p in parts),
                    missing,
                )
            )
    return out


def _cached_revisions() -> list[tuple[str, CachedRevisionInfo]]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    out = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        referenced = [r for r in repo.revisions if r.refs]
        for revision in referenced or [max(repo.revisions, key=lambda r: r.last_modified)]:
            out.append((repo.repo_id, revision))
    return out


def remove(ref: HubRef) -> list[Path]:
    """Delete a cached model: with a tag, that quantisation (and the projector once no model is left beside
    it); without one, the whole repo. Returns the files removed; ConfigError when nothing matched."""
    paths, deletion = removal(ref)
    deletion.execute()
    return paths


def removal(ref: HubRef) -> tuple[list[Path], DeleteCacheStrategy]:
    """What `remove` deletes (the files, as the cache's snapshot paths) and the deletion, not yet run."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        cache = None
    repos = [r for r in cache.repos if r.repo_type == "model" and r.repo_id == ref.repo] if cache else []
    if cache is None or not repos:
        raise ConfigError(f"{ref.repo} is not in the Hugging Face cache")
    revisions = [rev for repo in repos for rev in repo.revisions]
    if ref.tag is None:
        removed = [f.file_path for rev in revisions for f in rev.files]
        return removed, cache.delete_revisions(*(rev.commit_hash for rev in revisions))
    doomed = []
    for rev in revisions:
        files = {f.file_path.relative_to(rev.snapshot_path).as_posix(): f for f in rev.files}
        try:
            plan = choose(files, ref.tag, str(ref))
        except ConfigError:
            continue
        others = [n for n in files if _is_model(n) and n not in plan.parts]
        doomed += [files[n] for n in (plan.parts if others else plan.files)]
    if not doomed:
        raise ConfigError(f"no cached file of {ref.repo} is tagged {ref.tag}")
    return [f.file_path for f in doomed], cache.delete_files(*doomed)
