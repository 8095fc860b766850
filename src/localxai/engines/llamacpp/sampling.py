"""Per-choice sampler chains built from the request's sampling settings."""

from __future__ import annotations

import random

import llama_cpp as ll

from localxai.chat import Sampling

PENALTY_WINDOW = 64  # tokens the presence/frequency penalties look back over
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED means "pick one at random": avoid it


def choice_seed(seed: int | None, index: int) -> int:
    """Same request seed -> same choices; siblings (n > 1) get distinct seeds so they differ."""
    if seed is None:
        return random.randrange(_RANDOM_SEED)
    return (seed + index) % _RANDOM_SEED


class Sampler:
    """One llama.cpp sampler chain; the cut to `top_k` keeps sampling over a 262k vocabulary cheap.

    The chain owns the samplers added to it (a grammar sampler included) and frees them.
    """

    def __init__(
        self, sampling: Sampling, seed: int, top_k: int, n_vocab: int, grammar: ll.llama_sampler_p | None = None
    ) -> None:
        self._chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        add = self._add
        if grammar is not None:
            # First, over the whole vocabulary: a valid token must never be cut away by top-k.
            add(grammar)
        if top_k > 0:
            add(ll.llama_sampler_init_top_k(top_k))
        if sampling.presence_penalty or sampling.frequency_penalty:
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
        return int(ll.llama_sampler_sample(self._chain, ctx, batch_index))

    def close(self) -> None:
        ll.llama_sampler_free(self._chain)
