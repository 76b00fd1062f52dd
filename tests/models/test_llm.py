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


@pytest.mark.slow  # ~5 s on 2 idle cores: out of the fast lane
def test_left_padded_rows_with_left_positions_score_as_they_do_alone():
    torch = pytest.importorskip("torch")
    from routerank.models.llm import left_positions, pad_batch, tiny_llm

    model, _ = tiny_llm(seed=3)
    rows = [[5, 9, 14, 3, 7], [11, 4]]
    ids, mask = pad_batch(rows, 0, left=True)
    assert left_positions(mask).tolist() == [[0, 1, 2, 3, 4], [0, 0, 0, 0, 1]]
    with torch.inference_mode():
        batched = model(input_ids=ids, attention_mask=mask, position_ids=left_positions(mask)).logits[:, -1]
        alone = [model(input_ids=torch.tensor([row])).logits[0, -1] for row in rows]
    for row_logits, own in zip(batched, alone, strict=True):
        assert torch.allclose(row_logits, own, atol=1e-4)
