"""Figures in the README and the documentation site, filled in from `reports/*.json` so they cannot drift.

Two kinds of marker, in any Markdown file this module scans (README.md and docs/**/*.md):

    <!-- fig: starter.json figures.test.scifact.systems.routed.nDCG@10 .3f -->0.728<!-- /fig -->
    <!-- table: starter-test -->
    ...a generated Markdown table...
    <!-- /table -->

A `fig` names a report file under `reports/`, a dotted path into its JSON (integers index lists; a key with dots
of its own, such as `0.9`, matches whole) and an optional format spec. A `table` names one of
the renderers in `TABLES`. `python -m studies.figures` rewrites every marker's content in place; `--check` writes
nothing and exits 1 if any file is out of date, which the test suite runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from routerank.errors import RouterankError
from routerank.fsutil import atomic_write
from studies.report_format import DASH, format_p

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
FIG = re.compile(r"<!-- fig: (?P<file>\S+) (?P<path>\S+)(?: (?P<fmt>\S+))? -->(?P<value>.*?)<!-- /fig -->")
TABLE = re.compile(r"(?P<open><!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /table -->)", re.DOTALL)
STARTER_DOMAINS = ("scifact", "nfcorpus", "tatqa", "coliee-statutes")


@cache
def report(name: str) -> Any:
    """A report file's JSON, read once per run."""
    path = REPORTS / name
    if not path.is_file():
        raise RouterankError(f"figure marker names reports/{name}, which does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


def lookup(name: str, dotted: str) -> Any:
    """The value at a dotted path inside a report; a key that holds dots itself (`0.9`) matches whole, the
    longest such key first, and integers index lists."""
    value, parts, i = report(name), dotted.split("."), 0
    while i < len(parts):
        if isinstance(value, list) and parts[i].lstrip("-").isdigit():
            index = int(parts[i])
            if not -len(value) <= index < len(value):
                raise RouterankError(f"reports/{name}: index {index} is out of range in {dotted!r}")
            value, i = value[index], i + 1
            continue
        keys = [".".join(parts[i:j]) for j in range(len(parts), i, -1)] if isinstance(value, dict) else []
        key = next((k for k in keys if k in value), None)
        if key is None:
            there = list(value)[:12] if isinstance(value, dict) else type(value).__name__
            raise RouterankError(f"reports/{name}: no key {parts[i]!r} in {dotted!r} (there: {there})")
        value, i = value[key], i + key.count(".") + 1
    return value


def render_fig(name: str, dotted: str, fmt: str | None) -> str:
    """One inline figure, formatted by `fmt` (a Python format spec) when given."""
    value = lookup(name, dotted)
    return format(value, fmt) if fmt else str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], align: str = "l") -> str:
    header = list(header)
    marks = [":---" if align == "l" else "---:"] * len(header)
    marks[0] = ":---"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


STARTER_ROWS = (
    ("bm25", "BM25"),
    ("first", "first stage (hybrid: BM25 + MiniLM, RRF)"),
    ("generalist", "generalist, interpolated"),
    ("expert", "own-domain expert, interpolated"),
    ("routed", "**routed (`hybrid>>starter@20~auto`)**"),
    ("generalist-plain", "generalist alone"),
    ("routed-plain", "routed alone"),
)


def starter_test() -> str:
    """The starter bundle on the four full test sets: nDCG@10 of each system, the routed one's p against BM25."""
    test = report("starter.json")["figures"]["test"]
    header = ["system", *(f"{d} ({test[d]['queries']})" for d in STARTER_DOMAINS)]
    rows = []
    for key, label in STARTER_ROWS:
        cells = []
        for domain in STARTER_DOMAINS:
            system = test[domain]["systems"][key]
            cell = _num(system["nDCG@10"])
            if key == "routed":
                cell += f" (p {format_p(system['vs_bm25']['p'])})"
            cells.append(cell)
        rows.append([label, *cells])
    return _table(header, rows, "r")


def starter_router() -> str:
    """The starter's latent router: accuracy, threshold and where out-of-domain questions go."""
    router = report("starter.json")["figures"]["router"]
    rows = [
        [
            "test queries sent to their own domain's expert or the generalist correctly",
            f"{router['test_accuracy']:.1%}",
        ],
        ["in-domain test queries sent to the generalist", f"{router['test_to_generalist']:.1%}"],
        [
            f"out-of-domain questions (SQuAD, HotpotQA; {router['ood_queries']}) sent to the generalist",
            f"{router['ood_to_generalist']:.0%}",
        ],
        ["confidence threshold (chosen on dev)", f"{router['threshold']:.3f}"],
    ]
    return _table(["router", "value"], rows, "r")


CE_BACKENDS = ("torch-fp32", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")


def cpu_backends() -> str:
    """Cross-encoder pairs per second on 2 cores by backend and window, with parity and nDCG@10."""
    bench = report("bench-cpu.json")
    speed, parity, quality = bench["cross_encoder_pairs_per_s"], bench["parity"], bench["cross_encoder_ndcg@10"]
    windows = list(speed)
    header = ["backend", *(f"pairs/s at {w} tokens" for w in windows), "parity ρ", "SciFact nDCG@10", "NFCorpus"]
    rows = []
    for backend in CE_BACKENDS:
        base = "torch-fp32"
        cells = [f"{speed[w][backend]:.0f} ({speed[w][backend] / speed[w][base]:.2f}×)" for w in windows]
        rho = parity.get(backend, {}).get("spearman")
        rows.append(
            [
                f"`{backend}`",
                *cells,
                _num(rho, 3) if backend != base else "1 (reference)",
                _num(quality["scifact"].get(backend), 4),
                _num(quality["nfcorpus"].get(backend), 4),
            ]
        )
    return _table(header, rows, "r")


def dense_backends() -> str:
    """Bi-encoder documents per second on 2 cores by backend, with nDCG@10 of dense retrieval."""
    dense = report("bench-cpu.json")["dense"]
    base = dense["docs_per_s"]["torch-fp32"]
    rows = [
        [
            f"`{backend}`",
            f"{rate:.1f} ({rate / base:.2f}×)",
            _num(dense["ndcg@10"]["scifact"].get(backend), 4),
            _num(dense["ndcg@10"]["nfcorpus"].get(backend), 4),
        ]
        for backend, rate in dense["docs_per_s"].items()
    ]
    return _table(["backend", "docs/s", "SciFact nDCG@10", "NFCorpus nDCG@10"], rows, "r")


def serve_load() -> str:
    """The server under load: documents per second and latency per concurrency, routerank against its peers."""
    bench = report("bench-serve-cpu.json")
    labels = {"routerank": "routerank (`backend=auto`)", "torch": "same server, torch fp32", "infinity": "infinity"}
    rows = []
    for peer, result in bench["peers"].items():
        if result.get("status") != "ok":
            continue
        for level in result["levels"]:
            rows.append(
                [
                    labels.get(peer, peer),
                    level["concurrency"],
                    f"{level['docs_per_s']:.1f}",
                    f"{level['p50_ms']:.0f}",
                    f"{level['p95_ms']:.0f}",
                    f"{level['errors']}/{level['requests']}",
                ]
            )
    return _table(["server", "concurrency", "docs/s", "p50 ms", "p95 ms", "errors"], rows, "r")


def scale() -> str:
    """Ray scale-out: throughput of each setup and the 2-worker speed-up, results identical to in-process."""
    tasks = report("bench-scale.json")["tasks"]
    rows = []
    for task, result in tasks.items():
        unit = "docs_per_s" if "docs" in result else "pairs_per_s"
        for setup, measured in result["setups"].items():
            rows.append([task, setup, f"{measured[unit]:.1f} {unit.split('_')[0]}/s"])
        rows.append([task, "**2 workers over 1**", f"**{result['scaling_2_vs_1']:.2f}×**"])
    return _table(["task", "setup", "throughput"], rows)


R2R_ROWS = (
    ("bm25", "BM25 (the candidates)"),
    ("generalist", "SmolLM2 generalist, zero-shot"),
    ("pooled", "one LoRA, all domains pooled"),
    ("plain", "per-domain experts, no EAG, oracle routing"),
    ("r2r", "R2R: EAG experts + latent router"),
    ("oracle", "R2R with oracle routing"),
    ("ce", "MiniLM cross-encoder, trained on the pooled data"),
)


def r2r() -> str:
    """The R2R study on the SmolLM2 backbone: nDCG@10 of each system per domain, BM25 top 20 reranked alone."""
    table = report("r2r.json")["table"]
    domains = [d for d in table["r2r"] if d != "average"]
    rows = []
    for key, label in R2R_ROWS:
        if key in table:
            rows.append([label, *(_num(table[key].get(d, {}).get("nDCG@10")) for d in domains)])
    queries = table["r2r"][domains[0]]["queries"]
    return _table(["system", *(f"{d} ({queries})" for d in domains)], rows, "r")


def r3ag() -> str:
    """R3AG against its best fixed baseline: answer F1 per dataset and the paired randomisation p."""
    data = report("r3ag.json")
    rows = [
        [
            row["dataset"],
            row["queries"],
            _num(row["r3ag_f1"]),
            f"{row['best_baseline']} {_num(row['best_baseline_f1'])}",
            _num(row["oracle_f1"]),
            format_p(row["p_randomization"]),
        ]
        for row in data["headline"]
    ]
    return _table(["dataset", "queries", "R3AG F1", "best fixed choice F1", "oracle F1", "p"], rows, "r")


def interleaved_documents() -> str:
    """Document retrieval on TAT-QA report pages: each representation's nDCG@10 and R@10 on test."""
    documents = report("interleaved.json")["documents"]
    rows = [
        [
            f"`{name}`" if " " not in name else name,
            _num(system["dev"]["means"]["nDCG@10"]),
            _num(system["test"]["means"]["nDCG@10"]),
            _num(system["test"]["means"]["R@10"]),
        ]
        for name, system in documents["systems"].items()
    ]
    return _table(["representation", "dev nDCG@10", "test nDCG@10", "test R@10"], rows, "r")


def interleaved_passages() -> str:
    """Passage retrieval on TAT-QA test: coarse to fine against flat, with the passages each scores per query."""
    passages = report("interleaved.json")["passages"]
    rows = [
        [name, _num(system["means"]["nDCG@10"]), _num(system["means"]["R@10"]), system.get("passages_scored", DASH)]
        for name, system in passages["systems"].items()
    ]
    return _table(["system", "nDCG@10", "R@10", "passages scored per query"], rows, "r")


def interleaved_localisation() -> str:
    """Inside each test query's gold page: the share whose first-ranked passage is relevant, per fine stage."""
    located = report("interleaved.json")["localisation"]
    rows = [[name, f"{r['first_is_relevant']:.1%}", r["queries"]] for name, r in located.items()]
    return _table(["fine stage", "first passage relevant", "queries"], rows, "r")


def interleaved_tables() -> str:
    """Table linearisations on TAT-QA: passage-level BM25 and dense nDCG@10, train (where one is chosen) and test."""
    styles = report("interleaved.json")["linearisation"]["styles"]
    rows = [
        [
            f"`{style}`",
            split,
            _num(row[split]["bm25 passages"]["nDCG@10"]),
            _num(row[split]["dense passages"]["nDCG@10"]),
        ]
        for style, row in styles.items()
        for split in ("train", "test")
    ]
    return _table(["table style", "queries", "BM25 nDCG@10", "dense nDCG@10"], rows, "r")


def omni_hotpot() -> str:
    """hotpotqa-500 test: both supporting paragraphs in the top 5, the raw question against each aggregation."""
    hotpot = report("omni-rag.json")["hotpot"]
    rows = [
        ["raw question" if name == "raw" else f"decomposed, {name}", _num(row["both@5"]), _num(row["nDCG@10"])]
        for name, row in hotpot["systems"].items()
    ]
    return _table(["system", "both supporting paragraphs in top 5", "nDCG@10"], rows, "r")


def omni_noise() -> str:
    """The multi-intent benchmark's test pairs: each system at each typo rate."""
    rates = report("omni-rag.json")["synthetic"]["rates"]
    rows = [
        [f"{float(rate):.0%}", name, _num(row["nDCG@10"]), _num(row["intent_recall@10"]), _num(row["both_intents@10"])]
        for rate, systems in sorted(rates.items(), key=lambda item: float(item[0]))
        for name, row in systems.items()
    ]
    return _table(["typos", "system", "nDCG@10", "intent recall@10", "both intents@10"], rows, "r")


def rvg_qa() -> str:
    """Retrieval vs generation, open-domain QA: answer F1 of each context source per set (seeded test samples)."""
    qa = report("retrieval-vs-generation.json")["qa"]
    conditions = list(next(iter(qa.values()))["conditions"])
    rows = [
        [name, data["test_queries"], *(_num(data["conditions"][c]["F1"]) for c in conditions)]
        for name, data in qa.items()
    ]
    return _table(["set", "questions", *conditions], rows, "r")


def rvg_rank() -> str:
    """Retrieval vs generation, ranking: nDCG@10 of each system per set (seeded test samples)."""
    rank = report("retrieval-vs-generation.json")["rank"]
    systems = list(next(iter(rank.values()))["systems"])
    rows = [
        [name, data["test_queries"], *(_num(data["systems"][s]["nDCG@10"]) for s in systems)]
        for name, data in rank.items()
    ]
    return _table(["set", "queries", *(f"`{s}`" for s in systems)], rows, "r")


def rvg_lm() -> str:
    """Retrieval vs generation, language modelling: perplexity of a passage's second half given each context."""
    lm = report("retrieval-vs-generation.json")["lm"]
    rows = [
        [name, data["passages"], *(_num(data["conditions"][c]["perplexity"], 2) for c in ("none", "bm25", "generated"))]
        for name, data in lm.items()
    ]
    return _table(["set", "passages", "no context", "BM25 context", "generated context"], rows, "r")


R3AG_GENREAD_ROWS = (
    "r3ag",
    "r3ag-without-genread",
    "r3ag+genread-added",
    "r3ag-argmax",
    "always-retrieve",
    "fixed:genread",
    "fixed:R0",
)


def r3ag_genread() -> str:
    """R3AG with a generative member: answer F1 per set of the fresh router, the current pool's router, the router
    that added genread with add_retriever, always-retrieve, and how many test queries each router sends to genread."""
    data = report("r3ag-genread.json")
    rows = []
    for name, result in data["sets"].items():
        systems = result["systems"]
        shares = [systems[s].get("routes", {}).get("genread", 0) for s in ("r3ag", "r3ag+genread-added", "r3ag-argmax")]
        rows.append([name, result["queries"], *(_num(systems[s]["f1"]) for s in R3AG_GENREAD_ROWS), *shares])
    header = ["set", "queries", "R3AG (fresh)", "R3AG without genread", "genread added", "fresh, no margins"]
    header += ["always-retrieve"]
    header += ["genread alone", "closed-book", "routed to genread: fresh", "added", "no margins"]
    return _table(header, rows, "r")


TABLES: dict[str, Callable[[], str]] = {
    "starter-test": starter_test,
    "starter-router": starter_router,
    "cpu-backends": cpu_backends,
    "dense-backends": dense_backends,
    "serve-load": serve_load,
    "scale": scale,
    "r2r": r2r,
    "r3ag": r3ag,
    "interleaved-documents": interleaved_documents,
    "interleaved-passages": interleaved_passages,
    "interleaved-localisation": interleaved_localisation,
    "interleaved-tables": interleaved_tables,
    "omni-hotpot": omni_hotpot,
    "omni-noise": omni_noise,
    "rvg-qa": rvg_qa,
    "rvg-rank": rvg_rank,
    "rvg-lm": rvg_lm,
    "r3ag-genread": r3ag_genread,
}


def fill(text: str, where: str = "<text>") -> str:
    """`text` with every marker's content regenerated."""

    def table(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise RouterankError(f"{where}: unknown table {name!r}; known: {sorted(TABLES)}")
        return match["open"] + TABLES[name]() + match["close"]

    def fig(match: re.Match) -> str:
        value = render_fig(match["file"], match["path"], match["fmt"])
        fmt = f" {match['fmt']}" if match["fmt"] else ""
        return f"<!-- fig: {match['file']} {match['path']}{fmt} -->{value}<!-- /fig -->"

    for number, line in enumerate(text.splitlines(), 1):
        if line.count("<!-- fig:") != len(FIG.findall(line)):
            raise RouterankError(
                f"{where}:{number}: a fig marker that does not parse",
                fix="<!-- fig: FILE KEYPATH [FMT] -->value<!-- /fig --> on one line, with no spaces in the key path",
            )
    return FIG.sub(fig, TABLE.sub(table, text))


def documents(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may hold markers: README.md and everything under docs/."""
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    return found + sorted((root / "docs").rglob("*.md"))


def stale(root: Path = ROOT) -> list[Path]:
    """The files whose markers are out of date with the reports."""
    return [path for path in documents(root) if fill(path.read_text(encoding="utf-8"), str(path)) != path.read_text()]


def update(root: Path = ROOT) -> list[Path]:
    """Regenerate every out-of-date file, atomically; returns the files rewritten."""
    changed = stale(root)
    for path in changed:
        text = fill(path.read_text(encoding="utf-8"), str(path))
        with atomic_write(path) as out:
            out.write(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    """`python -m studies.figures [--check]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    try:
        changed = stale() if args.check else update()
    except RouterankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "out of date" if args.check else "updated"
    for path in changed:
        print(f"{verb}: {path.relative_to(ROOT)}")
    if not changed:
        print("every figure matches reports/")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
