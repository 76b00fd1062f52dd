from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from routerank.errors import RouterankError
from routerank.rerank.adapters import adapter_is_noop


def write_adapter(folder, b_value: float):
    folder.mkdir()
    a = np.ones((4, 8), dtype=np.float32)
    b = np.zeros((8, 4), dtype=np.float32)
    b[0, 0] = b_value
    save_file(
        {
            "base_model.model.layers.0.q_proj.lora_A.weight": a,
            "base_model.model.layers.0.q_proj.lora_B.weight": np.zeros((8, 4), dtype=np.float32),
            "base_model.model.layers.0.v_proj.lora_A.weight": a,
            "base_model.model.layers.0.v_proj.lora_B.weight": b,
        },
        str(folder / "adapter_model.safetensors"),
    )
    return folder


def test_an_adapter_whose_lora_b_is_all_zero_is_a_noop(tmp_path):
    assert adapter_is_noop(write_adapter(tmp_path / "untouched", 0.0))
    assert not adapter_is_noop(write_adapter(tmp_path / "trained", 1e-6))  # one nonzero weight is a change


def test_a_folder_without_adapter_weights_is_an_error(tmp_path):
    with pytest.raises(RouterankError, match="no adapter_model.safetensors"):
        adapter_is_noop(tmp_path)
