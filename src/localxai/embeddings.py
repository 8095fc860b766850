"""Embeddings, below the REST (`/v1/embeddings`) and gRPC (`Embedder.Embed`) adapters.

The default model is WordLlama's `l2_supercat` (MIT; weights and tokenizer ship inside the `wordllama`
wheel, so it works offline on a fresh machine): static token embeddings averaged over the text, 256
dimensions trained Matryoshka-style, so 64 and 128 are served too (`dimensions`). GGUF embedding models
run through llama.cpp's embedding mode (`--embedding-model`). Work runs in one worker thread per model,
off the event loop, a batch of texts at a time; vectors are unit length, so a dot product is the cosine.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from localxai.accounting import Accounting
from localxai.auth import ApiKey
from localxai.chat import Usage
from localxai.errors import ConfigError, InvalidArgument, ModelNotFound

MAX_INPUTS = 2048  # texts in one request, as OpenAI's limit
MAX_INPUT_TOKENS = 8192  # tokens in one text
DEFAULT_EMBEDDING_MODEL = "wordllama-l2-supercat"
Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EmbeddingModelInfo:
    id: str
    dimensions: tuple[int, ...]  # what `dimensions` may ask for; the last is the model's own
    created: int
    fingerprint: str
    aliases: tuple[str, ...] = ()


class Embedder(Protocol):
    info: EmbeddingModelInfo

    def count(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in the model's tokens."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One vector of the model's full dimension per text (blocking: runs in the model's worker)."""
        ...


class WordLlamaEmbedder:
    """WordLlama `l2_supercat` from the files bundled in the wheel (never a download)."""

    def __init__(self, model_id: str = DEFAULT_EMBEDDING_MODEL) -> None:
        from safetensors import safe_open
        from tokenizers import Tokenizer

        WordLlamaInference = _wordllama_inference()

        package = resources.files("wordllama")
        weights = Path(str(package / "weights" / "l2_supercat_256.safetensors"))
        tokenizer_file = Path(str(package / "tokenizers" / "l2_supercat_tokenizer_config.json"))
        if not weights.is_file() or not tokenizer_file.is_file():
            raise ConfigError("the wordllama package lacks its bundled l2_supercat model: reinstall it")
        with safe_open(str(weights), framework="np", device="cpu") as f:
            matrix = f.get_tensor("embedding.weight")
        self._model = WordLlamaInference(matrix, Tokenizer.from_file(str(tokenizer_file)))
        digest = hashlib.sha256(weights.read_bytes()[: 1 << 20]).hexdigest()[:12]
        self.info = EmbeddingModelInfo(model_id, (64, 128, 256), int(weights.stat().st_mtime), f"fp_{digest}")

    def count(self, texts: Sequence[str]) -> list[int]:
        encoded = self._model.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [sum(e.attention_mask) for e in encoded]  # the batch is padded: the mask says what is text

    def embed(self, texts: Sequence[str]) -> Vectors:
        # Similar lengths together: a batch is padded to its longest text.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.info.dimensions[-1]), dtype=np.float32)
        vectors = self._model.embed([texts[i] for i in order], norm=False, batch_size=16)
        out[order] = vectors
        return out


def _wordllama_inference() -> type:
    """wordllama's inference class. Importing wordllama calls `logging.basicConfig(level=INFO)`, which would
    take over the root logger (every library's INFO lines on the terminal): what it adds is taken back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from wordllama.inference import WordLlamaInference
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    return WordLlamaInference  # type: ignore[no-any-return]


class LlamaCppEmbedder:
    """A GGUF model through llama.cpp's embedding mode (mean pooling unless the model says otherwise)."""

    def __init__(self, model_id: str, path: Path, threads: int, ctx: int = MAX_INPUT_TOKENS) -> None:
        import llama_cpp

        from localxai.gguf_meta import read_metadata

        # A model that names no pooling (a chat model, say) would give a vector per token: average them.
        named = any(key.endswith(".pooling_type") for key in read_metadata(path))
        pooling = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if named else llama_cpp.LLAMA_POOLING_TYPE_MEAN
        self._llama = llama_cpp.Llama(
            model_path=str(path), embedding=True, pooling_type=pooling, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx,
            n_threads=threads, verbose=False,
        )  # fmt: skip
        dim = int(self._llama.n_embd())
        digest = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode()).hexdigest()[:12]
        self.info = EmbeddingModelInfo(model_id, (dim,), int(path.stat().st_mtime), f"fp_{digest}")

    def count(self, texts: Sequence[str]) -> list[int]:
        # As embed() feeds them: with the beginning-of-text token, and one more for an end token some add.
        return [len(self._llama.tokenize(t.encode(), add_bos=True, special=False)) + 1 for t in texts]

    def embed(self, texts: Sequence[str]) -> Vectors:
        rows = [self._llama.embed(t, normalize=False, truncate=False) for t in texts]
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)


@dataclass(frozen=True)
class Embedded:
    model: EmbeddingModelInfo
    vectors: Vectors  # (inputs, dimensions), unit length
    tokens: int


class Embeddings:
    def __init__(self, embedders: Sequence[Embedder], accounting: Accounting | None = None) -> None:
        self._models = {e.info.id: e for e in embedders}
        self._aliases = {a: e.info.id for e in embedders for a in e.info.aliases}
        self._workers = {e.info.id: ThreadPoolExecutor(1, thread_name_prefix=f"embed-{e.info.id}") for e in embedders}
        self._accounting = accounting or Accounting(None)

    def list_models(self) -> list[EmbeddingModelInfo]:
        return [e.info for e in self._models.values()]

    def get_model(self, name: str) -> EmbeddingModelInfo:
        return self._embedder(name).info

    def _embedder(self, name: str) -> Embedder:
        embedder = self._models.get(self._aliases.get(name, name))
        if embedder is None:
            served = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"The embedding model {name!r} does not exist (served here: {served}).")
        return embedder

    async def embed(
        self, model: str, texts: Sequence[str], dimensions: int | None = None, caller: ApiKey | None = None
    ) -> Embedded:
        embedder = self._embedder(model)
        info = embedder.info
        if not texts:
            raise InvalidArgument("input must hold at least one text.")
        if len(texts) > MAX_INPUTS:
            raise InvalidArgument(f"input holds {len(texts)} texts; at most {MAX_INPUTS} per request.")
        empty = next((i for i, text in enumerate(texts) if not text), None)
        if empty is not None:
            raise InvalidArgument(f"input[{empty}] is empty: each input must be a non-empty string.")
        if dimensions is not None and dimensions not in info.dimensions:
            choices = ", ".join(map(str, info.dimensions))
            raise InvalidArgument(f"The model {info.id} gives {choices} dimensions, not {dimensions}.")
        await self._accounting.admit(caller, info.id)
        loop = asyncio.get_running_loop()
        worker = self._workers[info.id]
        counts = await loop.run_in_executor(worker, embedder.count, list(texts))
        for index, count in enumerate(counts):
            if count > MAX_INPUT_TOKENS:
                raise InvalidArgument(
                    f"input[{index}] is {count} tokens; the model {info.id} embeds at most {MAX_INPUT_TOKENS}."
                )
        started = time.monotonic()
        vectors = await loop.run_in_executor(worker, embedder.embed, list(texts))
        vectors = vectors[:, : dimensions or info.dimensions[-1]]  # Matryoshka: the leading dimensions
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
        tokens = sum(counts)
        key_id = caller.key_id if caller else None
        await self._accounting.record(
            key_id, info.id, Usage(prompt_tokens=tokens), time.monotonic() - started, "embeddings"
        )
        return Embedded(info, vectors, tokens)

    def close(self) -> None:
        for worker in self._workers.values():
            worker.shutdown(wait=False, cancel_futures=True)


def embedders(specs: Sequence[str], threads: int, offline: bool = False) -> list[Embedder]:
    """The default model, then one per `--embedding-model` (a GGUF path or hf:ORG/REPO[:QUANT], named
    NAME=SPEC to choose its id)."""
    from localxai.hub import HubRef, is_hub_ref, pull

    served: list[Embedder] = [WordLlamaEmbedder()]
    for spec in specs:
        name, _, source = spec.rpartition("=") if "=" in spec.split(":", 1)[0] else ("", "", spec)
        if is_hub_ref(source):
            ref = HubRef.parse(source)
            path, default_id = pull(ref, offline=offline).path, ref.model_id
        else:
            path, default_id = Path(source).expanduser(), Path(source).stem
            if not path.is_file():
                raise ConfigError(f"--embedding-model: no such file {source!r}")
        served.append(LlamaCppEmbedder(name or default_id, path, threads))
    ids = [e.info.id for e in served]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"two embedding models share an id: {', '.join(ids)}")
    return served
