"""Per-choice sampler chains built from the request's sampling settings."""

from __future__ import annotations

import ctypes
import random

import llama_cpp as ll
import numpy as np

from localxai.chat import Sampling

PENALTY_WINDOW = 64  # tokens the presence/frequency penalties look back over
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED means "pick one at random": avoid it


def choice_seed(seed: int | None, index: int) -> int:
    """Same request seed -> same choices; siblings (n > 1) get distinct seeds so they differ."""
    if seed is None:
        return random.randrange(_RANDOM_SEED)
    return (seed + index) % _RANDOM_SEED


SHORTLIST_BLOCKS = 512  # slices of the vocabulary whose maxima bound the top-k cut from below
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class Sampler:
    """One llama.cpp sampler chain; the cut to `top_k` keeps sampling over a 262k vocabulary cheap.

    llama.cpp's own entry point copies the whole vocabulary into a candidate array before the chain
    cuts it to `top_k`: about 0.8 ms per token on 2 cores, against a decode step of 10-30 ms per row.
    So the candidates are shortlisted first: greedy choices (temperature 0, no penalties) take the
    arg-max of the logits, and the others hand the chain a few more than the `top_k` best tokens
    (`_shortlist`; the cut then keeps the same `top_k` tokens as from the whole vocabulary, and the
    chain's draws are the same). With a grammar, the token is first sampled so and only checked
    against the grammar; the grammar is applied to the whole vocabulary (slow) only when that token
    breaks it — llama.cpp's own strategy. The sampler owns its chain and grammar and frees them.
    """

    def __init__(
        self, sampling: Sampling, seed: int, top_k: int, n_vocab: int, grammar: ll.llama_sampler_p | None = None
    ) -> None:
        self._chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        self._grammar = grammar
        self._n_vocab = n_vocab
        self._top_k = min(top_k, n_vocab)
        penalties = bool(sampling.presence_penalty or sampling.frequency_penalty)
        self._greedy = sampling.temperature == 0 and not penalties
        add = self._add
        if top_k > 0:
            add(ll.llama_sampler_init_top_k(top_k))
        if penalties:
            # After the top-k cut: penalties over the whole vocabulary cost milliseconds per token.
            add(
                ll.llama_sampler_init_penalties(
                    n_vocab, PENALTY_WINDOW, 1.0, sampling.frequency_penalty, sampling.presence_penalty
                )
            )
        if sampling.temperature == 0:
            add(ll.llama_sampler_init_greedy())
            return
        if sampling.top_p < 1:
            add(ll.llama_sampler_init_top_p(sampling.top_p, 1))
        add(ll.llama_sampler_init_temp(sampling.temperature))
        add(ll.llama_sampler_init_dist(seed))

    def _add(self, sampler: ll.llama_sampler_p) -> None:
        ll.llama_sampler_chain_add(self._chain, sampler)

    def sample(self, ctx: ll.llama_context_p, batch_index: int) -> int:
        """Sample from the logits of one token of the last batch (and accept it into the chain)."""
        if self._top_k == 0 and self._grammar is None:  # no cut: the chain takes the whole vocabulary
            return int(ll.llama_sampler_sample(self._chain, ctx, batch_index))
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, batch_index), shape=(self._n_vocab,))
        token = int(logits.argmax()) if self._greedy else self._pick(*self._shortlist(logits))
        if self._grammar is not None and not self._grammar_allows(token):
            token = self._pick(np.arange(self._n_vocab, dtype=np.int32), logits, with_grammar=True)
        if self._grammar is not None:
            ll.llama_sampler_accept(self._grammar, token)
        if not self._greedy:  # the greedy chain keeps no state
            ll.llama_sampler_accept(self._chain, token)
        return token

    def _shortlist(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A few more than the `top_k` best tokens (ids, logits), all of them among it: the k-th best of
        the maxima of SHORTLIST_BLOCKS slices is a bound that at least k tokens reach, so every one of
        the k best does."""
        if self._top_k == 0:
            return np.arange(self._n_vocab, dtype=np.int32), logits
        step = max(1, self._n_vocab // max(SHORTLIST_BLOCKS, self._top_k))
        maxima = np.maximum.reduceat(logits, np.arange(0, self._n_vocab, step))
        bound = np.partition(maxima, len(maxima) - self._top_k)[len(maxima) - self._top_k]
        ids = np.flatnonzero(logits >= bound).astype(np.int32)
        return ids, logits[ids]

    def _pick(self, ids: np.ndarray, logits: np.ndarray, with_grammar: bool = False) -> int:
        data = np.empty(len(ids), dtype=_TOKEN_DATA)
        data["id"] = ids
        data["logit"] = logits
        data["p"] = 0.0
        candidates = _candidates(data)
        if with_grammar:
            ll.llama_sampler_apply(self._grammar, ctypes.byref(candidates))
        ll.llama_sampler_apply(self._chain, ctypes.byref(candidates))
        return int(candidates.data[candidates.selected].id)

    def _grammar_allows(self, token: int) -> bool:
        one = np.array([(token, 0.0, 0.0)], dtype=_TOKEN_DATA)
        ll.llama_sampler_apply(self._grammar, ctypes.byref(_candidates(one)))
        return bool(np.isfinite(one["logit"][0]))

    def close(self) -> None:
        ll.llama_sampler_free(self._chain)
        if self._grammar is not None:
            ll.llama_sampler_free(self._grammar)


def _candidates(data: np.ndarray) -> ll.llama_token_data_array:
    return ll.llama_token_data_array(
        data=data.ctypes.data_as(ll.llama_token_data_p), size=len(data), selected=-1, sorted=False
    )
