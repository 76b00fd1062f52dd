"""The noisy multi-intent benchmark: two queries from two different datasets joined into one, with typos.

Each `IntentPair` joins a query of one dataset and a query of another with a connective ("{a}? Also, {b}",
"{a} and {b}", ...), then adds seeded typos to the joined text at each rate of `noise.NOISE_RATES`. The gold is kept
per intent: intent 0 and intent 1 each carry their dataset, query id, text, relevant documents and answers (where the
dataset has them). Train pairs come from train splits and test pairs from test splits; a dataset without the split
is skipped and named in `Sources.skipped` and the manifest.

**Document ids are prefixed.** The two intents live in different corpora, so retrieval runs over `combined_corpus`,
whose ids are `"<dataset>/<doc id>"` (e.g. `"scifact/4983"`); the relevant ids of every intent use the same prefix.
A run over the benchmark is keyed by `IntentPair.id`.

Everything is drawn from `random.Random` seeded with strings, so `(split, n_pairs, seed, datasets)` always writes the
same bytes. Metrics: `intent_recall` (share of intents with a relevant document in the top k) and `both_intents`
(share of pairs where both intents have one).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from routerank.data.beir import qrels_splits
from routerank.data.registry import dataset_path, load_dataset
from routerank.data.types import Corpus, Dataset, Document, Query, Run
from routerank.errors import DataFormatError, RouterankError
from routerank.fsutil import atomic_write
from routerank.understand.noise import NOISE_RATES, add_typos

DEFAULT_DATASETS: tuple[str, ...] = ("scifact", "nfcorpus", "tatqa", "coliee-statutes", "squad-dev", "pubmedqa")
"""The source datasets: science, nutrition, finance tables, statutes, Wikipedia QA and biomedical QA."""

CONNECTIVES: tuple[str, ...] = (
    "{a}? Also, {b}",
    "{a} and {b}",
    "{a}; {b}",
    "{a}. Also: {b}",
    "{a}, as well as {b}",
    "{a}. In addition, {b}",
    "Two questions: {a}? {b}",
    "{a} - and separately, {b}",
)
"""How two queries are joined; `{a}` is the first query without its final "?" or ".", `{b}` the second as is."""

SEPARATOR = "/"
"""Between the dataset name and the document id in `combined_corpus` and in the gold."""


@dataclass(frozen=True, slots=True)
class Intent:
    """One of a pair's two questions: where it comes from, its text, its relevant (prefixed) documents, its answers."""

    dataset: str
    query_id: str
    text: str
    relevant: tuple[str, ...]
    answers: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntentPair:
    """A two-intent query: `text` joins the intents with `connective`; `noisy` maps each typo rate to the text with
    typos (rate 0.0 is `text` itself)."""

    id: str
    split: str
    connective: str
    text: str
    noisy: Mapping[float, str]
    intents: tuple[Intent, Intent]

    def text_at(self, rate: float) -> str:
        """The pair's text at a typo rate of `NOISE_RATES`."""
        if rate not in self.noisy:
            raise RouterankError(
                f"pair {self.id} has no text at typo rate {rate}", fix=f"use one of {sorted(self.noisy)}"
            )
        return self.noisy[rate]

    def to_json(self) -> dict:
        """The pair as one JSON record (rates as "0.05"-style keys)."""
        return {
            "id": self.id,
            "split": self.split,
            "connective": self.connective,
            "text": self.text,
            "noisy": {f"{rate:.2f}": text for rate, text in self.noisy.items()},
            "intents": [
                {
                    "dataset": i.dataset,
                    "query_id": i.query_id,
                    "text": i.text,
                    "relevant": list(i.relevant),
                    "answers": list(i.answers),
                }
                for i in self.intents
            ],
        }

    @classmethod
    def from_json(cls, record: Mapping) -> IntentPair:
        """The inverse of `to_json`."""
        intents = tuple(
            Intent(i["dataset"], i["query_id"], i["text"], tuple(i["relevant"]), tuple(i["answers"]))
            for i in record["intents"]
        )
        if len(intents) != 2:
            raise ValueError(f"expected 2 intents, found {len(intents)}")
        noisy = {float(rate): text for rate, text in record["noisy"].items()}
        return cls(record["id"], record["split"], record["connective"], record["text"], noisy, intents)


@dataclass(frozen=True)
class Sources:
    """The datasets a split's pairs are drawn from, and those skipped for lacking the split."""

    split: str
    datasets: Mapping[str, Dataset]
    skipped: tuple[str, ...] = ()


def load_sources(split: str, datasets: Sequence[str] = DEFAULT_DATASETS) -> Sources:
    """Load each dataset with only `split`'s qrels; those without the split are skipped. Fewer than two left raises."""
    loaded, skipped = {}, []
    for name in datasets:
        if split in qrels_splits(dataset_path(name)):
            loaded[name] = load_dataset(name, splits=[split])
        else:
            skipped.append(name)
    if len(loaded) < 2:
        raise RouterankError(
            f"only {sorted(loaded)} of {list(datasets)} have a {split!r} split; pairs need two datasets",
            fix="choose a split two or more datasets have (train or test)",
        )
    return Sources(split, loaded, tuple(skipped))


def _intents(ds: Dataset, split: str) -> list[Intent]:
    qrels = ds.split_qrels(split)
    found = []
    for query in ds.split_queries(split):
        relevant = sorted(f"{ds.name}{SEPARATOR}{d}" for d in qrels.relevant(query.id))
        if relevant and query.text.strip():
            found.append(Intent(ds.name, query.id, query.text.strip(), tuple(relevant), tuple(query.answers)))
    return found


def join(a: str, b: str, connective: str) -> str:
    """Two query texts joined by a connective of `CONNECTIVES`; `a` loses a final "?" or "." to read naturally."""
    return connective.format(a=a.rstrip().rstrip("?.").rstrip(), b=b.strip())


class _Deck:
    """Items dealt in a seeded shuffled order, reshuffled when used up."""

    def __init__(self, items: Sequence, rng: random.Random):
        self.items, self.rng, self.order = list(items), rng, []

    def deal(self):
        if not self.order:
            self.order = self.items[:]
            self.rng.shuffle(self.order)
        return self.order.pop()


def build_pairs(
    split: str,
    n_pairs: int,
    seed: int,
    datasets: Sequence[str] = DEFAULT_DATASETS,
    *,
    sources: Sources | None = None,
) -> list[IntentPair]:
    """`n_pairs` two-intent queries from `split`, the two intents always from different datasets; ordered dataset
    pairs are dealt evenly, queries without repeats until a dataset's are used up. Deterministic for the arguments."""
    if n_pairs < 1:
        raise RouterankError(f"n_pairs={n_pairs} builds nothing", fix="ask for at least one pair")
    sources = sources or load_sources(split, datasets)
    rng = random.Random(f"intent-pairs:{split}:{seed}")
    pools = {name: _intents(ds, split) for name, ds in sources.datasets.items()}
    names = [name for name in sources.datasets if pools[name]]
    if len(names) < 2:
        raise RouterankError(f"fewer than two datasets have judged {split!r} queries", fix="choose another split")
    decks = {name: _Deck(pools[name], rng) for name in names}
    couples = _Deck([(a, b) for a in names for b in names if a != b], rng)
    pairs = []
    for number in range(n_pairs):
        first, second = couples.deal()
        a, b = decks[first].deal(), decks[second].deal()
        connective = rng.choice(CONNECTIVES)
        pair_id = f"{split}-{number:05d}"
        text = join(a.text, b.text, connective)
        noisy = {rate: add_typos(text, rate, f"{seed}:{pair_id}") for rate in NOISE_RATES}
        pairs.append(IntentPair(pair_id, split, connective, text, noisy, (a, b)))
    return pairs


def combined_corpus(datasets: Iterable[str | Dataset]) -> Corpus:
    """One corpus of several datasets' documents, ids prefixed `"<dataset>/<doc id>"` (metadata gains `dataset`)."""
    documents = []
    for item in datasets:
        ds = load_dataset(item, splits=()) if isinstance(item, str) else item
        for doc in ds.corpus.documents:
            metadata = {**doc.metadata, "dataset": ds.name, "source_id": doc.id}
            documents.append(Document(f"{ds.name}{SEPARATOR}{doc.id}", doc.text, doc.title, metadata))
    return Corpus(documents)


def pair_queries(pairs: Sequence[IntentPair], rate: float = 0.0) -> list[Query]:
    """The pairs as queries (id = pair id, text at the typo rate, answers of both intents) for a retriever."""
    return [
        Query(p.id, p.text_at(rate), tuple(a for i in p.intents for a in i.answers), {"intents": p.intents})
        for p in pairs
    ]


def _hits(run: Run, pairs: Sequence[IntentPair], k: int) -> list[tuple[bool, bool]]:
    if not pairs:
        raise RouterankError("no pairs to score", fix="build pairs with build_pairs or read_benchmark first")
    if k < 1:
        raise RouterankError(f"k={k} looks at no document", fix="use k >= 1")
    found = []
    for pair in pairs:
        top = set(run[pair.id].doc_ids[:k]) if pair.id in run else set()
        first, second = (bool(top.intersection(i.relevant)) for i in pair.intents)
        found.append((first, second))
    return found


def intent_recall(run: Run, pairs: Sequence[IntentPair], k: int = 10) -> float:
    """Share of intents (two per pair) with at least one relevant document in the pair's top `k`; a pair missing
    from the run counts as two misses."""
    hits = _hits(run, pairs, k)
    return sum(a + b for a, b in hits) / (2 * len(hits))


def both_intents(run: Run, pairs: Sequence[IntentPair], k: int = 10) -> float:
    """Share of pairs whose top `k` holds a relevant document for both intents."""
    hits = _hits(run, pairs, k)
    return sum(a and b for a, b in hits) / len(hits)


def benchmark_paths(folder: str | Path, split: str) -> tuple[Path, Path]:
    """The pairs file (`<split>.jsonl`) and manifest (`<split>.manifest.json`) of a split in `folder`."""
    folder = Path(folder)
    return folder / f"{split}.jsonl", folder / f"{split}.manifest.json"


def write_benchmark(
    folder: str | Path, split: str, n_pairs: int, seed: int, datasets: Sequence[str] = DEFAULT_DATASETS
) -> Path:
    """Build a split's pairs and write them, one JSON line per pair with every noise variant, plus a manifest (seed,
    pair counts per dataset couple, the sources' corpus fingerprints, skipped datasets). Returns the JSONL path."""
    sources = load_sources(split, datasets)
    pairs = build_pairs(split, n_pairs, seed, datasets, sources=sources)
    pairs_path, manifest_path = benchmark_paths(folder, split)
    couples = Counter(f"{p.intents[0].dataset}+{p.intents[1].dataset}" for p in pairs)
    manifest = {
        "split": split,
        "seed": seed,
        "pairs": len(pairs),
        "noise_rates": list(NOISE_RATES),
        "id_format": f"<dataset>{SEPARATOR}<doc id>",
        "datasets": {name: {"corpus_fingerprint": ds.corpus.fingerprint} for name, ds in sources.datasets.items()},
        "skipped": list(sources.skipped),
        "pair_counts": dict(sorted(couples.items())),
        "connective_counts": dict(sorted(Counter(p.connective for p in pairs).items())),
    }
    with atomic_write(pairs_path) as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
    with atomic_write(manifest_path) as handle:
        handle.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return pairs_path


def read_benchmark(path: str | Path) -> list[IntentPair]:
    """The pairs of a JSONL written by `write_benchmark`; a bad line raises `DataFormatError` naming it."""
    path = Path(path)
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            pairs.append(IntentPair.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as error:
            raise DataFormatError(
                f"not a benchmark pair ({error})", path=path, line=number, fix="write it again with write_benchmark"
            ) from error
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m routerank.understand.benchmark --split test --pairs 300 --seed 13 --out FOLDER`."""
    parser = argparse.ArgumentParser(description="Write the noisy multi-intent benchmark of one split.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    args = parser.parse_args(argv)
    try:
        path = write_benchmark(args.out, args.split, args.pairs, args.seed, args.datasets)
    except RouterankError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
