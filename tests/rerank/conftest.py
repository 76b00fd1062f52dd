from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    """Random-init 2-layer Llama with SmolLM2's tokenizer: fast, and real enough to test the machinery."""
    from routerank.models.llm import tiny_llm

    return tiny_llm(seed=0)


@pytest.fixture(scope="session")
def smollm2():
    from routerank.models.llm import load_causal_lm

    return load_causal_lm("smollm2", device="cpu")
