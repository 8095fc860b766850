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
