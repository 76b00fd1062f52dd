from __future__ import annotations

import pytest

from routerank.errors import SpecError


@pytest.mark.parametrize(
    ("name", "expected"),
    [("bf16", "bfloat16"), ("bfloat16", "bfloat16"), ("FP32", "float32"), ("half", "float16"), (None, "float32")],
)
def test_dtype_names_and_their_short_forms_mean_one_torch_dtype(name, expected):
    import torch

    from routerank.models.llm import torch_dtype

    assert torch_dtype(name, "cpu") == getattr(torch, expected)


def test_no_dtype_is_bf16_on_a_gpu_and_an_unknown_one_is_a_spec_error():
    import torch

    from routerank.models.llm import torch_dtype

    assert torch_dtype(None, "cuda:0") == torch.bfloat16
    with pytest.raises(SpecError, match="unknown dtype 'int4'") as refused:
        torch_dtype("int4", "cpu")
    assert "bfloat16 (bf16)" in refused.value.fix


def test_kv_cache_name_is_the_one_the_installed_transformers_takes():
    import inspect

    from transformers import LlamaModel

    from routerank.models.llm import kv_cache_name

    assert kv_cache_name() in inspect.signature(LlamaModel.forward).parameters
