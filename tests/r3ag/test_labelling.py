from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from routerank.generate.templates import TEMPLATES
from routerank.r3ag.labelling import LabelSettings, build_labels, em_matrix, work_dir_for
from routerank.r3ag.labels import RoutingLabels
from routerank.r3ag.pool import PoolConfig
from tests.conftest import write_jsonl

POOL = PoolConfig.from_specs({"R0": "null", "bm25": "bm25"})


@pytest.fixture
def qa_beir(tmp_path: Path) -> Path:
    folder = tmp_path / "qa"
    write_jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Paris", "text": "Paris is the capital of France."},
            {"_id": "d2", "title": "Berlin", "text": "Berlin is the capital of Germany."},
            {"_id": "d3", "title": "Rome", "text": "Rome is the capital of Italy."},
        ],
    )
    write_jsonl(
        folder / "queries.jsonl",
        [
            {"_id": "q1", "text": "capital of France", "answers": ["Paris"]},
            {"_id": "q2", "text": "capital of Germany", "answers": ["Berlin"]},
            {"_id": "q3", "text": "capital of Italy", "answers": ["Rome"]},
        ],
    )
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    return folder


def generator(tiny, cache_dir: Path, fail_after: int | None = None):
    """A tiny-model Generator that counts decoded prompts and, past `fail_after` batches, dies like a killed run."""
    from routerank.generate.generator import Generator

    gen = Generator("tiny", loaded=tiny, max_new_tokens=2, batch_size=1, cache_dir=cache_dir, progress=False)
    decode, state = gen.decode, {"batches": 0, "rows": 0}

    def counted(rows):
        if fail_after is not None and state["batches"] >= fail_after:
            raise KeyboardInterrupt("killed")
        state["batches"] += 1
        state["rows"] += len(rows)
        return decode(rows)

    gen.decode = counted
    return gen, state


def test_a_killed_build_resumes_without_regenerating(qa_beir, tiny, tmp_path):
    work, cache = tmp_path / "work", tmp_path / "generations"
    settings = LabelSettings("train", k=1)
    first, state = generator(tiny, cache, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        build_labels(str(qa_beir), POOL, settings, work_dir=work, generator=first, progress=False)
    assert state["rows"] == 2 and not (work / "labels").exists() and (work / "runs" / "bm25.trec").exists()

    second, state = generator(tiny, cache)
    labels = build_labels(str(qa_beir), POOL, settings, work_dir=work, generator=second, progress=False)
    assert state["rows"] == 6 - 2  # 3 closed-book + 3 bm25 top-1 prompts, 2 of them finished before the kill

    dead, _ = generator(tiny, cache, fail_after=0)
    assert build_labels(str(qa_beir), POOL, settings, work_dir=work, generator=dead).query_ids == labels.query_ids
    (work / "labels" / "labels.json").unlink()
    rebuilt = build_labels(str(qa_beir), POOL, settings, work_dir=work, generator=dead, progress=False)
    np.testing.assert_array_equal(rebuilt.utility, labels.utility)


def test_labels_hold_ndcg_f1_and_em(qa_beir, tiny, tmp_path):
    gen, _ = generator(tiny, tmp_path / "generations")
    labels = build_labels(str(qa_beir), POOL, LabelSettings("train", k=1), work_dir=tmp_path / "w", generator=gen)
    loaded = RoutingLabels.load(tmp_path / "w" / "labels")
    assert loaded.retrievers == ("R0", "bm25") and loaded.abstain == ("R0",)
    assert loaded.quality[:, 0].tolist() == [0, 0, 0]
    assert loaded.quality[:, 1].tolist() == [1, 1, 1]  # bm25 ranks each capital's page first
    em = em_matrix(loaded)
    assert em.shape == (3, 2) and ((em == 0) | (em == 1)).all() and (em <= labels.utility + 1e-6).all()
    np.testing.assert_array_equal(em_matrix(loaded.subset([2]).select(["bm25", "R0"])), em[[2]][:, ::-1])
    assert loaded.meta["generation"]["bm25"]["generated"] == 3


def test_judge_quality_labels(qa_beir, tiny, tmp_path):
    from routerank.errors import SpecError
    from routerank.r3ag.judge import LLMJudge

    gen, _ = generator(tiny, tmp_path / "generations")
    judge = LLMJudge.from_model(*tiny, progress=False)
    settings = LabelSettings("train", k=2, quality="judge")
    labels = build_labels(str(qa_beir), POOL, settings, work_dir=tmp_path / "j", generator=gen, judge=judge)
    assert labels.quality[:, 0].tolist() == [0, 0, 0]  # R0 retrieves nothing to judge
    assert ((labels.quality[:, 1] > 0) & (labels.quality[:, 1] < 1)).all()
    assert labels.quality[:, 1].tolist() != [1, 1, 1]  # not the qrels' nDCG@10
    meta = RoutingLabels.load(tmp_path / "j" / "labels").meta
    assert meta["quality"] == "judge" and meta["judge"]["model"] == "custom"
    assert set(meta["judge_criteria"]["bm25"]) == {"relevance", "coverage", "redundancy"}
    assert meta["judge_vs_qrels"]["cells"] == 3  # one retrieving member x 3 queries
    # a judged build keys its own work dir; the default keys the same dir as before the setting existed
    plain = LabelSettings("train", k=2)
    assert work_dir_for("qa", POOL, settings) != work_dir_for("qa", POOL, plain)
    defaults = {k: v for k, v in asdict(plain).items() if k not in ("quality", "judge")}
    record = {"pool": POOL.to_json(), "template_version": TEMPLATES["plain"].version, **defaults}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]
    assert work_dir_for("qa", POOL, plain).name == f"qa-train-all-{digest}"
    with pytest.raises(SpecError, match="quality label source"):
        LabelSettings("train", quality="vibes")


def test_a_new_template_version_keys_new_labels_and_a_new_experiment(monkeypatch):
    from studies.r3ag.experiment import R3AGExperimentConfig

    settings = LabelSettings("train", sample=200)
    before, config = work_dir_for("qa", POOL, settings), R3AGExperimentConfig(datasets=("qa",))
    digest = config.digest()
    monkeypatch.setitem(TEMPLATES, "plain", replace(TEMPLATES["plain"], version=TEMPLATES["plain"].version + 1))
    assert work_dir_for("qa", POOL, settings) != before  # old answers are never read as the new template's labels
    assert config.digest() != digest  # nor routers trained on them
