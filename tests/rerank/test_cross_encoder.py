from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from routerank.errors import SpecError
from routerank.rerank.cross_encoder import autocast_name
from routerank.rerank.registry import make_reranker


@pytest.fixture(scope="module")
def reranker(fresh_ce):
    return make_reranker(f"ce:{fresh_ce}", device="cpu", progress=False)


def test_import_routerank_rerank_cross_encoder_loads_no_torch():
    code = (
        "import sys, routerank.rerank.cross_encoder, routerank.train.cross_encoder\n"
        "print([m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("arg", ["", "/no/such/folder"])
def test_missing_folder_is_a_spec_error_that_says_how_to_train_one(arg):
    with pytest.raises(SpecError, match="routerank train cross-encoder"):
        make_reranker(f"ce:{arg}")


def test_an_embedding_model_is_refused(tmp_path):
    from routerank.models.spec import resolve_model

    with pytest.raises(SpecError, match="not a cross-encoder"):
        make_reranker(f"ce:{resolve_model('minilm').location}")


def test_a_folder_without_weights_or_with_bad_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    with pytest.raises(SpecError, match="no weights"):
        make_reranker(f"ce:{tmp_path}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(SpecError, match="no weights") as refused:
        make_reranker(f"ce:{tmp_path}")
    assert "safetensors only" in str(refused.value)  # a pickle is never loaded, and the fix says how to convert
    (tmp_path / "pytorch_model.bin").unlink()
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        make_reranker(f"ce:{tmp_path}")


def test_unknown_option_is_a_spec_error(fresh_ce):
    with pytest.raises(SpecError, match="does not take that option"):
        make_reranker(f"ce:{fresh_ce}", max_doc_tokens=128)


def test_loads_by_spec_with_its_saved_max_length_and_an_override(reranker, fresh_ce):
    assert reranker.name == f"ce:{fresh_ce}"
    assert reranker.max_length == 64
    assert make_reranker(f"ce:{fresh_ce}", max_length=32, device="cpu").max_length == 32


def test_scores_are_raw_logits_independent_of_batching(reranker, scifact):
    docs = [d.full_text for d in scifact.corpus.documents[:7]]
    pairs = [("does aspirin prevent heart attacks", d) for d in docs]
    batched = reranker.score_pairs(pairs)
    reranker.batch_size = 2
    try:
        small_batches = reranker.score_pairs(pairs)
    finally:
        reranker.batch_size = 32
    one_by_one = np.concatenate([reranker.score_pairs([p]) for p in pairs])
    assert batched.shape == (7,) and batched.dtype == np.float64
    np.testing.assert_allclose(batched, small_batches, atol=1e-5)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert len(set(np.round(batched, 6))) > 1
    assert reranker.score_pairs([]).shape == (0,)


def test_rerank_orders_documents_by_score(reranker):
    docs = ["Aspirin lowers heart attack risk.", "Cats sleep a lot.", "Statins lower cholesterol."]
    ranking = reranker.rerank("aspirin and heart attacks", docs)
    scores = reranker.score_pairs([("aspirin and heart attacks", d) for d in docs])
    assert list(ranking.doc_ids) == [str(i) for i in np.argsort(-scores, kind="stable")]
    assert list(ranking.scores) == sorted(ranking.scores, reverse=True)


def test_pipeline_reranks_a_permutation_of_bm25_top_10(fresh_ce, reranker, scifact):
    from routerank.pipeline import build

    queries = scifact.split_queries("test")[:4]
    bm25 = build("bm25", scifact.corpus).search(queries, 10)
    pipeline = build(f"bm25>>ce:{fresh_ce}@10", scifact.corpus, reranker_options={"device": "cpu"})
    run = pipeline.search(queries, 10)
    assert run.name.endswith(f">>ce:{fresh_ce}")
    for query in queries:
        got, base = run[query.id], bm25[query.id]
        assert sorted(got.doc_ids) == sorted(base.doc_ids)
        expected = reranker.score_pairs([(query.text, scifact.corpus[d].full_text) for d in got.doc_ids])
        np.testing.assert_allclose(got.scores, expected, atol=1e-5)
        assert list(got.scores) == sorted(got.scores, reverse=True)


def test_a_bare_name_finds_a_model_saved_in_the_cache(fresh_ce):
    import shutil

    from routerank.fsutil import cache_root
    from routerank.rerank.cross_encoder import check_model_folder

    target = cache_root() / "models" / "ce-test-bare-name"
    shutil.copytree(fresh_ce, target, dirs_exist_ok=True)
    assert check_model_folder("ce-test-bare-name") == target
    with pytest.raises(SpecError, match="does not exist"):
        check_model_folder("ce-no-such-model")


def test_cached_length_sorted_and_bf16_scores_match_the_plain_predict(fresh_ce, scifact, tmp_path, monkeypatch):
    import torch
    from sentence_transformers import CrossEncoder

    monkeypatch.setenv("ROUTERANK_CACHE", str(tmp_path))
    query = scifact.split_queries("test")[0]
    pairs = [(query.text, d.full_text[: 40 * (i % 7 + 1)]) for i, d in enumerate(scifact.corpus.documents[:24])]
    plain = CrossEncoder(str(fresh_ce), device="cpu").predict(pairs, activation_fn=torch.nn.Identity())
    cached = make_reranker(f"ce:{fresh_ce}", device="cpu", progress=False, cache=True)
    np.testing.assert_allclose(cached.score_pairs(pairs), plain, atol=1e-5)  # input order survives the sort
    assert len(cached._cache) == len(pairs)
    again = make_reranker(f"ce:{fresh_ce}", device="cpu", progress=False, cache=True)
    again.model.predict = None  # everything must come from the cache now
    np.testing.assert_allclose(again.score_pairs(pairs), plain, atol=1e-5)
    bf16 = make_reranker(f"ce:{fresh_ce}", device="cpu", progress=False, cache=True, dtype="bf16")
    assert bf16.scorer_key != cached.scorer_key and bf16.scorer_key.endswith("-bf16")
    scores = bf16.score_pairs(pairs)
    assert np.abs(scores - plain).max() < 0.05 and np.corrcoef(scores, plain)[0, 1] > 0.99
    with pytest.raises(SpecError, match="dtype"):
        make_reranker(f"ce:{fresh_ce}", dtype="fp8")


def test_ce_dtype_names_are_the_llm_loaders_names():
    assert [autocast_name(n) for n in (None, "fp32", "float32", "FP32")] == [None] * 4
    assert [autocast_name(n) for n in ("bf16", "bfloat16", " BF16 ")] == ["bf16"] * 3  # one cache key for all three
    assert [autocast_name(n) for n in ("fp16", "float16", "half")] == ["fp16"] * 3
    with pytest.raises(SpecError, match="unknown dtype 'int8' for a cross-encoder"):
        autocast_name("int8")
