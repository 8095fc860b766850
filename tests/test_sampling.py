"""Greedy choices taken straight from the logits are the tokens llama.cpp's own chain picks."""

from __future__ import annotations

from pathlib import Path

import llama_cpp as ll

from localxai.chat import Sampling
from localxai.engines.llamacpp.default_model import default_model_path
from localxai.engines.llamacpp.model import ContextShape, LlamaModel
from localxai.engines.llamacpp.sampling import Sampler


def test_greedy_fast_path_picks_what_the_chain_picks() -> None:
    model = LlamaModel(default_model_path(Path.home() / ".cache" / "localxai" / "models"), ContextShape(256, 2, 1))
    try:
        text = "The lighthouse keeper counted the ships: one, two, three. Then the storm came and"
        prompt = model.tokenize(text, True, False)
        model.batch_clear()
        for pos, token in enumerate(prompt):
            model.batch_add(token, pos, 0, True)
        model.batch_decode()
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(40))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        fast = Sampler(Sampling(temperature=0), seed=1, top_k=40, n_vocab=model.n_vocab)
        try:
            picked = [fast.sample(model.ctx, i) for i in range(len(prompt))]
            expected = [int(ll.llama_sampler_sample(chain, model.ctx, i)) for i in range(len(prompt))]
        finally:
            fast.close()
            ll.llama_sampler_free(chain)
        assert len(prompt) > 15 and picked == expected
    finally:
        model.close()


def test_shortlisted_sampling_draws_what_the_chain_draws() -> None:
    """Seeded, the chain over a shortlist and llama.cpp's own entry point over the whole vocabulary
    draw the same tokens, with a top-p cut and penalties too."""
    model = LlamaModel(default_model_path(Path.home() / ".cache" / "localxai" / "models"), ContextShape(256, 2, 1))
    try:
        prompt = model.tokenize("Once upon a time, in a village by the sea, there lived a baker who", True, False)
        model.batch_clear()
        for pos, token in enumerate(prompt):
            model.batch_add(token, pos, 0, True)
        model.batch_decode()
        for sampling in (Sampling(temperature=1.5), Sampling(temperature=0.7, top_p=0.9, presence_penalty=1.0)):
            ours = Sampler(sampling, seed=7, top_k=40, n_vocab=model.n_vocab)
            theirs = Sampler(sampling, seed=7, top_k=40, n_vocab=model.n_vocab)
            try:
                picked = [ours.sample(model.ctx, i) for i in range(len(prompt))]
                expected = [int(ll.llama_sampler_sample(theirs._chain, model.ctx, i)) for i in range(len(prompt))]
            finally:
                ours.close()
                theirs.close()
            assert len(set(picked)) > 5 and picked == expected
    finally:
        model.close()
