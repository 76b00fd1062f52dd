"""The server reports each model's backend in /ready and /metrics, and falls back to torch when an export fails."""

from __future__ import annotations

import logging

import httpx
import pytest

import routerank
from routerank.errors import RouterankError
from routerank.models.backends import CalibrationGroup
from routerank.rerank import cross_encoder
from routerank.serve.state import load_models
from tests.serve.conftest import config_for, serving

pytest.importorskip("onnxruntime")

GROUPS = (
    CalibrationGroup("what lowers cholesterol", ("Statins lower cholesterol.", "The court ruled.", "Fibre helps.")),
    CalibrationGroup("revenue in 2019", ("Revenue grew 12% in 2019.", "Aspirin and the heart.", "Sales fell.")),
)


def test_ready_and_metrics_name_the_backend(fresh_ce, ce, keys, monkeypatch):
    monkeypatch.setattr(cross_encoder, "calibration_groups", lambda: (GROUPS, "hand-written"))
    fast = routerank.Reranker(f"ce:{fresh_ce}", backend="onnx", progress=False)
    config = config_for(fresh_ce, models={"fast": {"spec": f"ce:{fresh_ce}", "options": {"backend": "onnx"}}})
    with serving(config, ce, models={"ce": ce, "fast": fast}) as (url, _server, _app):
        ready = httpx.get(f"{url}/ready").json()
        assert ready["backends"] == {"ce": "torch", "fast": "onnx"}
        metrics = httpx.get(f"{url}/metrics", headers=keys).text
        assert 'routerank_model_backend{backend="onnx",model="fast"} 1.0' in metrics
        answer = httpx.post(
            f"{url}/v2/rerank",
            json={"model": "fast", "query": "what lowers cholesterol", "documents": list(GROUPS[0].documents)},
            headers=keys,
        )
        assert answer.status_code == 200 and len(answer.json()["results"]) == 3


def test_a_failed_export_falls_back_to_torch_with_a_logged_reason(fresh_ce, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("ROUTERANK_CACHE", str(tmp_path))  # nothing exported yet: the export needs calibration

    def no_data():
        raise RouterankError("no calibration data: none of scifact with a train split was found")

    monkeypatch.setattr(cross_encoder, "calibration_groups", no_data)
    config = config_for(fresh_ce, models={"ce": {"spec": f"ce:{fresh_ce}", "options": {"backend": "openvino-int8"}}})
    with caplog.at_level(logging.WARNING, logger="routerank.serve"):
        models = load_models(config)
    assert models["ce"].runtime == "torch"
    assert "backend openvino-int8 failed (no calibration data" in caplog.text
