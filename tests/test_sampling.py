"""The sampler's shortlists (greedy arg-max, top-k bound) pick what llama.cpp's own entry point picks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import llama_cpp as ll
import pytest

from localxai.chat import Sampling
from localxai.engines.llamacpp.default_model import default_model_path
from localxai.engines.llamacpp.model import ContextShape, LlamaModel
from localxai.engines.llamacpp.sampling import Sampler


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    loaded = LlamaModel(default_model_path(Path.home() / ".cache" / "localxai" / "models"), ContextShape(256, 2, 1))
    yield loaded
    loaded.close()


def decode(model: LlamaModel, text: str) -> int:
    """Decode `text` with logits at every position; the number of positions."""
    prompt = model.tokenize(text, True, False)
    model.seq_keep_prefix(0, 0)
    model.batch_clear()
    for pos, token in enumerate(prompt):
        model.batch_add(token, pos, 0, True)
    model.batch_decode()
    return len(prompt)


def test_greedy_fast_path_picks_what_the_chain_picks(model: LlamaModel) -> None:
    positions = decode(model, "The lighthouse keeper counted the ships: one, two, three. Then the storm came and")
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(40))
    ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
    fast = Sampler(Sampling(temperature=0), seed=1, top_k=40, n_vocab=model.n_vocab)
    try:
        picked = [fast.sample(model.ctx, i) for i in range(positions)]
        expected = [int(ll.llama_sampler_sample(chain, model.ctx, i)) for i in range(positions)]
    finally:
        fast.close()
        ll.llama_sampler_free(chain)
    assert positions > 15 and picked == expected


@pytest.mark.parametrize(
    "sampling", [Sampling(temperature=1.5), Sampling(temperature=0.7, top_p=0.9, presence_penalty=1.0)]
)
def test_shortlisted_sampling_draws_what_the_chain_draws(model: LlamaModel, sampling: Sampling) -> None:
    """Seeded, the chain over a shortlist and llama.cpp's own entry point over the whole vocabulary
    (the same chain, `_chain`) draw the same tokens."""
    positions = decode(model, "Once upon a time, in a village by the sea, there lived a baker who")
    ours = Sampler(sampling, seed=7, top_k=40, n_vocab=model.n_vocab)
    theirs = Sampler(sampling, seed=7, top_k=40, n_vocab=model.n_vocab)
    try:
        picked = [ours.sample(model.ctx, i) for i in range(positions)]
        expected = [int(ll.llama_sampler_sample(theirs._chain, model.ctx, i)) for i in range(positions)]
    finally:
        ours.close()
        theirs.close()
    assert len(set(picked)) > 5 and picked == expected
