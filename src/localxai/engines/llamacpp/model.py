"""A loaded GGUF: llama.cpp model, vocabulary and one context, behind a small typed wrapper.

Only the scheduler thread decodes (also for speed: llama.cpp's OpenMP thread team belongs to the thread
that computes, and a computation on a second thread slows every later step, docs/engine.md, Images);
tokenizing touches the read-only vocabulary and may run anywhere.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll
import numpy as np

from localxai.chat import TokenLogprob, TopLogprob
from localxai.engines.llamacpp.templates import Segment
from localxai.errors import ConfigError, InternalError

log = logging.getLogger(__name__)


GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR = 3, 4


# llama.cpp warnings that are expected, not problems (kept at debug level):
EXPECTED_WARNINGS = (
    # Gemma 3 GGUFs mark </s> as a normal token; llama.cpp overrides its type itself, as it says.
    "was not control-type; this is probably a bug in the model",
    # localxai asks for the full sliding-window cache on purpose: the prefix cache reuses any prefix.
    "using full-size SWA cache",
)


@ll.llama_log_callback
def llama_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp is chatty on stderr; keep only its warnings and errors, in our log.
    if level in (GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR):
        message = text.decode(errors="replace").rstrip()
        severity = logging.WARNING if level == GGML_LOG_LEVEL_WARN else logging.ERROR
        if severity == logging.WARNING and any(expected in message for expected in EXPECTED_WARNINGS):
            severity = logging.DEBUG
        log.log(severity, "llama.cpp: %s", message)


@functools.cache
def _init_llama() -> None:
    """llama.cpp's log goes to ours and its backends start: once, when the first model loads."""
    ll.llama_log_set(llama_log, ctypes.c_void_p(0))
    ll.llama_backend_init()


@dataclass(frozen=True)
class ContextShape:
    ctx_size: int  # tokens per sequence: prompt + completion of one choice
    threads: int
    parallel: int | None = 4  # sequences decoded together (kept as prefix cache when idle); None: auto_parallel
    n_batch: int = 512

    @property
    def cells(self) -> int:
        """KV cells: every sequence can reach ctx_size at once; shared prefixes take less."""
        assert self.parallel is not None, "resolved when the model loads"
        return self.ctx_size * self.parallel


PARALLEL_CHOICES = (16, 8, 4)
KV_MEMORY_SHARE = 4  # the KV cache may take a quarter of the machine's memory


def auto_parallel(ctx_size: int, kv_bytes_per_token: int, memory: int) -> int:
    """The default number of sequences: the largest of 16, 8 and 4 whose KV cache (every sequence at
    full context) fits in a quarter of the memory, else as many as fit (at least one).

    Measured on two 2-core machines with the default model, llama_decode gives 40, 111 and 141 (Intel)
    and 95, 199 and 322 (AMD EPYC) tokens/s for batches of 1, 8 and 16 sequences: more sequences keep
    adding throughput under load, and an idle slot costs only its memory, so memory decides.
    """
    budget = memory // KV_MEMORY_SHARE
    for parallel in PARALLEL_CHOICES:
        if parallel * ctx_size * kv_bytes_per_token <= budget:
            return parallel
    return max(1, budget // max(1, ctx_size * kv_bytes_per_token))


def kv_bytes_per_token(metadata: Mapping[str, object]) -> int:
    """KV cache bytes one position takes (f16 keys and values in every layer), from the GGUF's metadata
    (llama.cpp's strings once loaded, or the header's values read without loading: gguf_meta)."""
    arch = str(metadata.get("general.architecture", ""))

    def number(key: str, default: int) -> int:
        raw = metadata.get(f"{arch}.{key}", "")
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        # Per-layer arrays (some hybrid models) come as "[a, b, ...]": take the largest.
        values = [int(v) for v in str(raw).strip("[]").replace(",", " ").split() if v.isdigit()]
        return max(values) if values else default

    layers = number("block_count", 32)
    heads = number("attention.head_count", 32)
    head_dim = number("embedding_length", 4096) // max(1, heads)
    kv_heads = number("attention.head_count_kv", heads)
    per_layer = kv_heads * (number("attention.key_length", head_dim) + number("attention.value_length", head_dim))
    return 2 * layers * per_layer


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class LlamaModel:
    def __init__(self, path: Path, shape: ContextShape) -> None:
        _init_llama()
        self.path = path
        self.shape = shape
        params = ll.llama_model_default_params()
        self._model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ConfigError(f"llama.cpp could not load {path} (not a GGUF model it supports?)")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.metadata = self._read_metadata()
        self.n_ctx_train = ll.llama_model_n_ctx_train(self._model)
        if shape.parallel is None:
            parallel = auto_parallel(shape.ctx_size, self.kv_bytes_per_token(), physical_memory())
            self.shape = shape = dataclasses.replace(shape, parallel=parallel)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self._pieces: dict[int, bytes] = {}
        ctx_params = ll.llama_context_default_params()
        ctx_params.n_ctx = shape.cells
        ctx_params.n_batch = shape.n_batch
        ctx_params.n_ubatch = shape.n_batch
        assert shape.parallel is not None
        self.parallel: int = shape.parallel
        ctx_params.n_seq_max = shape.parallel
        # One KV stream per sequence: a row attends over its own sequence's cells only. With one
        # buffer for all (kv_unified) a shared prefix is shared without copying, but every row's
        # attention and mask span every sequence's cells: at 8 conversations of ~1,500 tokens a step
        # mixing prefill and decoding took 331 instead of 204-227 ms (docs/engine.md, Prefix cache).
        # Full-size SWA layers so a cached prefix can be cut at any position.
        ctx_params.kv_unified = False
        ctx_params.swa_full = True
        ctx_params.n_threads = shape.threads
        ctx_params.n_threads_batch = shape.threads
        ctx_params.no_perf = True
        self.ctx = ll.llama_init_from_model(self._model, ctx_params)
        if not self.ctx:
            raise ConfigError(f"llama.cpp could not create a context of {shape.ctx_size} tokens")
        self.memory = ll.llama_get_memory(self.ctx)
        self._batch = ll.llama_batch_init(shape.n_batch, 0, 1)

    @property
    def handle(self) -> ll.llama_model_p:
        return self._model

    # -- vocabulary ---------------------------------------------------------------------------

    @property
    def bos_text(self) -> str:
        return self.piece(ll.llama_vocab_bos(self._vocab), special=True).decode(errors="replace")

    @property
    def eos_text(self) -> str:
        return self.piece(ll.llama_vocab_eos(self._vocab), special=True).decode(errors="replace")

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        while True:
            buf = (ll.llama_token * capacity)()
            n = ll.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_bos, special)
            if n >= 0:
                return list(buf[:n])
            capacity = -n

    def continuation(self, text: str) -> list[int] | None:
        """Tokens whose pieces are exactly `text`, to write after other output; None when this
        vocabulary cannot say it so. SentencePiece tokenizers may put a space before a text: it is
        then tokenized after a newline, and the tokens up to the newline dropped."""
        tokens = self.tokenize(text, add_bos=False, special=False)
        if b"".join(map(self.piece, tokens)) == text.encode():
            return tokens
        tokens = self.tokenize("\n" + text, add_bos=False, special=False)
        written = b""
        for i, token in enumerate(tokens):
            written += self.piece(token)
            if written.endswith(b"\n") and written.strip() == b"":
                rest = tokens[i + 1 :]
                return rest if b"".join(map(self.piece, rest)) == text.encode() else None
        return None

    def tokenize_segments(self, segments: list[Segment], bos: bool = True) -> list[int]:
        """Segments tokenized one by one; `bos`: they start the prompt (BOS first, if the model wants one)."""
        add_bos = bos and ll.llama_vocab_get_add_bos(self._vocab)
        tokens: list[int] = []
        for i, segment in enumerate(segments):
            tokens += self.tokenize(segment.text, add_bos=add_bos and i == 0, special=segment.special)
        return tokens

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (possibly a partial UTF-8 sequence); control tokens render empty."""
        key = token if not special else -token - 1
        cached = self._pieces.get(key)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
            cached = self._pieces[key] = buf.raw[:n]
        return cached

    def grammar_sampler(self, gbnf: str) -> ll.llama_sampler_p | None:
        """A llama.cpp grammar sampler, or None when llama.cpp cannot parse the grammar."""
        sampler = ll.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        return sampler or None

    def logprob(self, batch_index: int, token: int, top: int) -> TokenLogprob:
        """Log-probability of `token` (and the `top` likeliest) under the model's distribution."""
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(self.ctx, batch_index), shape=(self.n_vocab,))
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logprobs, top)[:top] if top else np.array([], dtype=int)
        best = best[np.argsort(-logprobs[best])]

        def entry(t: int) -> tuple[str, float, bytes]:
            raw = self.piece(int(t), special=True)
            return raw.decode(errors="replace"), float(logprobs[t]), raw

        text, value, raw = entry(token)
        return TokenLogprob(text, value, raw, tuple(TopLogprob(*entry(t)) for t in best))

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self._vocab, token))

    # -- decoding (scheduler thread only) -------------------------------------------------------

    def seq_keep_prefix(self, seq_id: int, length: int) -> None:
        """Drop the sequence's KV from position `length` on (0: all of it)."""
        ll.llama_memory_seq_rm(self.memory, seq_id, length, -1)

    def seq_copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Give `dst` the first `length` positions of `src`. Between KV streams llama.cpp copies only
        whole streams (replacing what `dst` held; the data moves at the next decode, ~10 ms for 8,192
        cells of the default model), so the copy is whole and then cut."""
        ll.llama_memory_seq_cp(self.memory, src, dst, -1, -1)
        self.seq_keep_prefix(dst, length)

    def seq_state(self, seq_id: int) -> ctypes.Array[ctypes.c_uint8]:
        """A copy of the sequence's KV (every cell it holds, with positions), for `seq_restore`."""
        size = ll.llama_state_seq_get_size(self.ctx, seq_id)
        buf = (ctypes.c_uint8 * size)()
        if ll.llama_state_seq_get_data(self.ctx, buf, size, seq_id) != size:
            raise InternalError("llama.cpp could not copy a sequence's KV")
        return buf

    def seq_restore(self, seq_id: int, state: ctypes.Array[ctypes.c_uint8]) -> bool:
        """Replace the sequence's KV by a saved one; False (and the sequence empty) if it does not fit."""
        if ll.llama_state_seq_set_data(self.ctx, state, len(state), seq_id) == 0:
            self.seq_keep_prefix(seq_id, 0)
            return False
        return True

    def batch_clear(self) -> None:
        self._batch.n_tokens = 0

    def batch_add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append one token to the pending batch; returns its index (for reading logits)."""
        batch = self._batch
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits
        batch.n_tokens = i + 1
        return i

    def batch_size(self) -> int:
        return int(self._batch.n_tokens)

    def batch_decode(self) -> None:
        rc = ll.llama_decode(self.ctx, self._batch)
        if rc != 0:
            raise InternalError(f"llama_decode failed with code {rc}")

    def close(self) -> None:
        if self.ctx:
            ll.llama_batch_free(self._batch)
            ll.llama_free(self.ctx)
            self.ctx = None
        if self._model:
            ll.llama_model_free(self._model)
            self._model = None

    def kv_bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.metadata)

    def _read_metadata(self) -> dict[str, str]:
        buf = ctypes.create_string_buffer(1 << 20)  # chat templates can be long
        out: dict[str, str] = {}
        for i in range(ll.llama_model_meta_count(self._model)):
            ll.llama_model_meta_key_by_index(self._model, i, buf, len(buf))
            key = buf.value.decode(errors="replace")
            ll.llama_model_meta_val_str_by_index(self._model, i, buf, len(buf))
            out[key] = buf.value.decode(errors="replace")
        return out
