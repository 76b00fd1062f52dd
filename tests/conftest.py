from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from routerank.data.registry import data_root
from routerank.data.types import Document
from routerank.r3ag.router import encoder_features


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never read or write the user's cache unless ROUTERANK_CACHE is set on purpose."""
    if "ROUTERANK_CACHE" not in os.environ:
        os.environ["ROUTERANK_CACHE"] = str(tmp_path_factory.mktemp("routerank-cache"))
    yield


class CachedFeatures:
    """MiniLM features of query texts (the R3AG router's real encoder), each text encoded once per session."""

    def __init__(self):
        self.encode, self.cache = encoder_features("minilm"), {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.encode(missing), strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


def shared_dataset(name: str) -> Path:
    folder = data_root() / name
    if not (folder / "corpus.jsonl").exists():
        pytest.skip(f"dataset {name} not found under {data_root()} (set ROUTERANK_DATA)")
    return folder


@pytest.fixture(scope="session")
def scifact():
    from routerank.data.registry import load_dataset

    return load_dataset(str(shared_dataset("scifact")))


@pytest.fixture(scope="session")
def nfcorpus():
    from routerank.data.registry import load_dataset

    return load_dataset(str(shared_dataset("nfcorpus")))


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    """A small valid BEIR folder that tests then break one way at a time."""
    folder = tmp_path / "tiny"
    write_jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack."},
            {"_id": "d2", "title": "Statins", "text": "Statins lower cholesterol in adults."},
            {"_id": "d3", "title": "Only a title", "text": ""},
        ],
    )
    write_jsonl(
        folder / "queries.jsonl",
        [
            {"_id": "q1", "text": "does aspirin prevent heart attacks", "answers": ["yes"]},
            {"_id": "q2", "text": "what lowers cholesterol"},
        ],
    )
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\n")
    return folder


@pytest.fixture(scope="session")
def fresh_ce(tmp_path_factory):
    """MiniLM with a fresh, seeded 1-logit head saved as a CrossEncoder folder: untrained, but real and fast."""
    import torch

    from routerank.train.cross_encoder import new_cross_encoder

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ce") / "fresh-ce"
    new_cross_encoder("minilm", max_length=64, device="cpu").save_pretrained(str(folder), create_model_card=False)
    return folder


@pytest.fixture(scope="session")
def tiny():
    """Random-init 2-layer Llama with SmolLM2's tokenizer: fast, and real enough to test the machinery. Shared by the
    whole session, so tests only read it; a test that trains or hooks a model loads its own with `tiny_llm`."""
    from routerank.models.llm import tiny_llm

    return tiny_llm(seed=0)


def graded_docs(grades) -> list[Document]:
    """Documents d0, d1, ... whose text names their grade: what the grade-reading choosers of the LLM rerankers see."""
    return [Document(f"d{i}", f"passage {i} has grade {g}") for i, g in enumerate(grades)]
