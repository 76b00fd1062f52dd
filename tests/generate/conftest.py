from __future__ import annotations

import pytest


@pytest.fixture
def scripted():
    """A fresh tiny model steered to say `text` then EOS: a forward hook on the LM head lifts the next
    scripted token's logit, so generate(), the stop rules and the decoding all run for real."""
    from routerank.models.llm import tiny_llm

    def make(text: str):
        model, tokenizer = tiny_llm(seed=1)
        script = [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        step = {"n": 0}

        def lift(module, inputs, logits):
            token = script[min(step["n"], len(script) - 1)]
            step["n"] += 1
            logits[:, -1, token] += 1e4
            return logits

        model.lm_head.register_forward_hook(lift)
        return model, tokenizer

    return make
