"""Fast CPU backends: the parity check, exports and their cache, a killed export, and the encoders on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routerank.errors import SpecError
from routerank.models import export as exporting
from routerank.models.backends import (
    BackendError,
    CalibrationGroup,
    ExportedEncoder,
    batched,
    check_backend,
    export_key,
    export_root,
    parity,
)
from routerank.models.export import choose, export, torch_runner
from routerank.rerank import cross_encoder
from routerank.rerank.cross_encoder import CrossEncoderReranker
from routerank.rerank.registry import make_reranker
from routerank.retrieve.calibration import calibration_groups
from routerank.retrieve.dense import dense_options

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

GROUPS = (
    CalibrationGroup(
        "does aspirin prevent heart attacks",
        (
            "Aspirin reduces the risk of heart attack in adults.",
            "Statins lower cholesterol.",
            "The court dismissed the appeal.",
            "Heart attacks are caused by blocked arteries.",
            "Revenue grew by 12% in 2019.",
        ),
    ),
    CalibrationGroup(
        "what lowers cholesterol",
        (
            "Statins lower cholesterol in adults.",
            "Dietary fibre reduces LDL.",
            "The statute was amended in 1998.",
            "Cholesterol is a lipid.",
        ),
    ),
)


def test_parity_passes_the_same_ranking_and_fails_a_reversed_one():
    ref = [np.array([3.0, 2.0, 1.0, 0.0]), np.array([0.1, 0.5, 0.3])]
    same = parity(ref, [r + 0.01 for r in ref])
    assert same.passed and same.spearman == pytest.approx(1.0) and same.top10 == 1.0
    assert same.max_abs_diff == pytest.approx(0.01)
    flipped = parity(ref, [-r for r in ref])
    assert not flipped.passed and flipped.spearman == pytest.approx(-1.0)


def test_parity_top10_overlap_counts_the_shared_top_documents():
    ref = np.arange(20, dtype=float)
    cand = ref.copy()
    cand[[19, 0]] = cand[[0, 19]]  # the best and the worst swap: one of the top 10 is lost
    result = parity([ref], [cand])
    assert result.top10 == pytest.approx(0.9) and result.spearman < 0.99


def test_backend_names_are_checked():
    assert check_backend("OpenVINO_int8") == "openvino-int8"
    assert check_backend(None) == "torch"
    with pytest.raises(SpecError, match="unknown backend"):
        check_backend("tensorrt")
    with pytest.raises(SpecError):
        check_backend("auto", allow_auto=False)


@pytest.fixture(scope="module")
def fresh_model(fresh_ce):
    return CrossEncoderReranker(fresh_ce, progress=False).exportable()


def test_onnx_export_matches_torch_and_records_parity(fresh_model):
    folder = export(fresh_model, "onnx", GROUPS, calibration_source="hand-written")
    record = json.loads((folder / "export.json").read_text())
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] < 1e-4
    assert record["calibration"] == {"source": "hand-written", "groups": 2, "items": 9}
    assert record["versions"]["onnxruntime"] != "-"
    assert not fresh_model.module.training  # the exporter must not leave the torch model with dropout on
    graph = ExportedEncoder(folder, threads=1)
    pairs = [(g.query, d) for g in GROUPS for d in g.documents]
    reference = batched(torch_runner(fresh_model.module), fresh_model.tokenizer, "cross-encoder", pairs, 64, 4)
    np.testing.assert_allclose(graph.embed(pairs), reference.reshape(-1), atol=1e-4)


def test_an_export_is_reused_and_keyed_by_backend_and_length(fresh_model):
    first = export(fresh_model, "onnx", GROUPS)
    stamp = (first / "export.json").stat().st_mtime_ns
    assert export(fresh_model, "onnx", GROUPS) == first
    assert (first / "export.json").stat().st_mtime_ns == stamp
    assert export_key(fresh_model.fingerprint, "cross-encoder", "onnx", 64) != export_key(
        fresh_model.fingerprint, "cross-encoder", "onnx", 128
    )
    assert export_key(fresh_model.fingerprint, "cross-encoder", "onnx", 64) != export_key(
        fresh_model.fingerprint, "cross-encoder", "openvino", 64
    )


def test_a_killed_export_leaves_nothing_that_loads(fresh_model, monkeypatch, tmp_path):
    folder = tmp_path / "exports" / "killed"

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # the process dies between writing the graph and checking it

    monkeypatch.setattr(exporting, "open_runtime", killed)
    with pytest.raises(KeyboardInterrupt):
        export(fresh_model, "onnx", GROUPS, folder=folder)
    assert not folder.exists()
    assert not list(folder.parent.glob("*"))  # the temp folder went too
    with pytest.raises(BackendError, match="not an export folder"):
        ExportedEncoder(folder)


@pytest.mark.slow
def test_openvino_int8_calibrates_and_loads(fresh_model):
    folder = export(fresh_model, "openvino-int8", GROUPS, calibration_source="hand-written")
    record = json.loads((folder / "export.json").read_text())
    assert (folder / "model.xml").is_file() and not (folder / "model.onnx").exists()
    assert set(record["parity"]) == {"spearman", "top10", "max_abs_diff", "passed"}
    scores = ExportedEncoder(folder, threads=1).embed([("what lowers cholesterol", "Statins lower cholesterol.")])
    assert scores.shape == (1,) and np.isfinite(scores).all()


def test_export_without_calibration_is_a_clear_error(fresh_model, tmp_path):
    with pytest.raises(BackendError, match="calibration"):
        export(fresh_model, "onnx-int8", (), folder=tmp_path / "x")


def _fake_export(model, backend: str, passed: bool, speed: float) -> None:
    folder = export_root() / export_key(model.fingerprint, model.kind, backend, model.max_length)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "backend": backend,
        "parity": {"spearman": 0.999 if passed else 0.9, "top10": 1.0, "max_abs_diff": 0.0, "passed": passed},
        "speed": {"items_per_s": speed, "torch_items_per_s": 10.0},
    }
    (folder / "export.json").write_text(json.dumps(record))


def test_auto_picks_the_fastest_backend_that_passes_parity(fresh_model, monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTERANK_CACHE", str(tmp_path))
    _fake_export(fresh_model, "openvino-int8", passed=False, speed=90.0)
    _fake_export(fresh_model, "openvino-bf16", passed=True, speed=40.0)
    _fake_export(fresh_model, "onnx-int8", passed=True, speed=20.0)
    chosen, folder, figures = choose(fresh_model, GROUPS)
    assert chosen == "openvino-bf16" and folder.name.startswith("openvino-bf16")
    assert figures["openvino-int8"]["passed"] is False


def test_auto_keeps_torch_when_nothing_passes_or_beats_it(fresh_model, monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTERANK_CACHE", str(tmp_path))
    _fake_export(fresh_model, "openvino-int8", passed=False, speed=90.0)
    _fake_export(fresh_model, "onnx-int8", passed=True, speed=5.0)  # slower than torch's 10/s
    _fake_export(fresh_model, "openvino-bf16", passed=False, speed=80.0)
    chosen, folder, _ = choose(fresh_model, GROUPS)
    assert (chosen, folder) == ("torch", None)


def test_cross_encoder_spec_takes_a_backend_and_scores_like_torch(fresh_ce, monkeypatch):
    monkeypatch.setattr(cross_encoder, "calibration_groups", lambda: (GROUPS, "hand-written"))
    fast = make_reranker(f"ce:{fresh_ce},backend=onnx", progress=False)
    plain = make_reranker(f"ce:{fresh_ce}", progress=False)
    assert fast.backend == "onnx" and plain.backend == "torch"
    assert fast.scorer_key.endswith("-onnx") and fast.scorer_key != plain.scorer_key
    pairs = [("does aspirin prevent heart attacks", d) for d in GROUPS[0].documents]
    np.testing.assert_allclose(fast.score_pairs(pairs), plain.score_pairs(pairs), atol=1e-4)


def test_dense_spec_options_are_parsed():
    assert dense_options("minilm,backend=OpenVINO-int8") == ("minilm", {"backend": "openvino-int8"})
    assert dense_options("backend=onnx,max_length=128") == ("minilm", {"backend": "onnx", "max_length": 128})
    with pytest.raises(SpecError, match="bad dense option"):
        dense_options("minilm,colour=red")


def test_calibration_draws_train_queries_only(scifact):
    groups, source = calibration_groups(("scifact",), queries_per_set=3, depth=4)
    train = {q.text for q in scifact.split_queries("train")}
    test = {q.text for q in scifact.split_queries("test")}
    assert len(groups) == 3 and all(g.query in train and g.query not in test for g in groups)
    assert all(len(g.documents) == 4 for g in groups) and "train split of scifact" in source
