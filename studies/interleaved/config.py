"""The interleaved study's settings, read from TOML; the digest keys its work dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from routerank.stages import read_toml_config
from studies.base import StudyConfig


@dataclass(frozen=True)
class InterleavedConfig(StudyConfig):
    """What the study runs.

    dataset: a BEIR folder with a documents.tsv. model / backend: the bi-encoder that embeds passages, queries and
    whole documents. merges: the document representations compared. table_styles: the table linearisations
    compared; the one used elsewhere is chosen on train queries. attention_*: the attention pooling's training
    (train queries; the best epoch by dev loss). depths: the coarse stage's document depths tried on dev (the one
    chosen must score fewer passages per query than `flat_depth`). flat_depth: passages the flat baseline reranks.
    fine: the fine stages (a reranker spec, "passage-vectors", or "idcm-selector:<selector>"). long_dataset /
    chunk_words / max_chunks: the document-level comparison on long documents cut into passages.
    """

    profile: str = "cpu"
    dataset: str = "tatqa"
    model: str = "minilm"
    backend: str = "openvino-bf16"
    merges: tuple[str, ...] = ("mean", "max", "attention", "first", "concat", "maxp")
    table_styles: tuple[str, ...] = ("pipe", "markdown", "statements")
    attention_epochs: int = 60
    attention_lr: float = 3e-3
    attention_temperature: float = 0.05
    seed: int = 13
    depths: tuple[int, ...] = (1, 2, 3)
    flat_depth: int = 20
    fine: tuple[str, ...] = ("passage-vectors", "idcm-selector:bm25", "ce:starter,backend=auto")
    long_dataset: str = "aila-cases"
    chunk_words: int = 200
    max_chunks: int = 8

    UNKEYED = ("profile",)

    @classmethod
    def load(cls, path: str | Path) -> InterleavedConfig:
        """The config at `path` (unknown keys are an error)."""
        return read_toml_config(cls, path, tuples=("merges", "table_styles", "depths", "fine"))
