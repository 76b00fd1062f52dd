"""Typed data and BEIR/TREC file formats."""

from routerank.data.beir import load_beir, read_corpus, read_qrels, read_queries, write_beir
from routerank.data.registry import data_root, list_datasets, load_dataset
from routerank.data.trec import read_run, write_run, write_trec_qrels
from routerank.data.types import Corpus, Dataset, Document, Qrels, Query, Ranking, Run, ScoredDoc, sample_queries

__all__ = [
    "Corpus",
    "Dataset",
    "Document",
    "Qrels",
    "Query",
    "Ranking",
    "Run",
    "ScoredDoc",
    "data_root",
    "list_datasets",
    "load_beir",
    "load_dataset",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_run",
    "sample_queries",
    "write_beir",
    "write_run",
    "write_trec_qrels",
]
