"""reports/interleaved.md from the study's results: one table per question, with the protocol above each."""

from __future__ import annotations

from typing import Any

from studies.report_format import DASH, format_p


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(value: float | None) -> str:
    return DASH if value is None else f"{value:.4f}"


def markdown(results: dict[str, Any], command: str) -> str:
    """The report as Markdown."""
    out = ["# Documents made of passages and tables (TAT-QA report pages)", "", f"Reproduce: `{command}`", ""]
    lin = results.get("linearisation")
    if lin:
        out += [
            "## Table linearisation",
            "",
            f"Chosen on train queries: **{lin['chosen']}** (best nDCG@10 of flat dense passage retrieval on train). "
            "Passage-level nDCG@10 for BM25 and dense passages, document-level for mean-merged documents.",
            "",
            _row(["style", "split", "BM25 passages", "dense passages", "dense documents (mean)"]),
            "|---|---|---:|---:|---:|",
        ]
        for style, row in lin["styles"].items():
            for split in ("train", "test"):
                cells = [
                    row[split][k]["nDCG@10"] for k in ("bm25 passages", "dense passages", "dense documents (mean)")
                ]
                out.append(_row([style, split, *(_num(c) for c in cells)]))
        out.append("")
    docs = results.get("documents")
    if docs:
        out += [
            "## Document retrieval",
            "",
            f"Document-level qrels (a document is relevant if a passage of it is); tables as {docs['style']}. "
            f"The best merge (**{docs['best_merge']}**) and the best representation (**{docs['best']}**) were "
            "chosen on dev; test only measures. MaxP scores every passage and keeps each document's best.",
            "",
            _row(["representation", "dev nDCG@10", "test nDCG@10", "test R@10"]),
            "|---|---:|---:|---:|",
        ]
        for name, system in docs["systems"].items():
            test = system["test"]["means"]
            out.append(_row([name, _num(system["dev"]["means"]["nDCG@10"]), _num(test["nDCG@10"]), _num(test["R@10"])]))
        out += ["", _row(["test, paired", "Δ nDCG@10", "p (t-test)", "p (randomisation)"]), "|---|---:|---:|---:|"]
        for name, t in docs["tests"].items():
            out.append(_row([name, f"{t['delta']:+.4f}", format_p(t["p"]), format_p(t["p_perm"])]))
        out.append("")
    depth = results.get("depth")
    passages = results.get("passages")
    if passages:
        out += [
            "## Coarse to fine against flat passage retrieval",
            "",
            "Passage-level nDCG@10 on test, per family of first stage. Flat: passage retrieval (dense, or BM25), "
            "its top passages reranked by the fine stage. Coarse to fine: documents of the same family (the dense "
            "representation chosen on dev, or BM25 over whole documents), every passage of the top ones ranked by "
            "the same fine stage; the document depth was chosen on dev among the depths that score fewer passages "
            "than flat.",
            "",
            _row(["system", "nDCG@10", "R@10", "passages scored per query"]),
            "|---|---:|---:|---:|",
        ]
        for name, system in passages["systems"].items():
            means = system["means"]
            out.append(
                _row([name, _num(means["nDCG@10"]), _num(means.get("R@10")), system.get("passages_scored", DASH)])
            )
        out += [
            "",
            _row(["family, fine stage", "coarse − flat", "p (t-test)", "p (randomisation)"]),
            "|---|---:|---:|---:|",
        ]
        for spec, t in passages["tests"].items():
            out.append(_row([spec, f"{t['delta']:+.4f}", format_p(t["p"]), format_p(t["p_perm"])]))
        out.append("")
    if depth:
        out += ["Depths tried on dev (nDCG@10 / passages scored):", ""]
        for family, by_spec in depth["tried"].items():
            for spec, tried in by_spec.items():
                cells = ", ".join(f"{d} docs: {r['nDCG@10']:.4f} / {r['passages_scored']}" for d, r in tried.items())
                out.append(f"- {family}, `{spec}`: {cells}; chosen {depth['chosen'][family][spec]}")
        out.append("")
    loc = results.get("localisation")
    if loc:
        out += [
            "## Passage localisation inside the gold document",
            "",
            "For each test query, its gold document's passages ranked by the fine stage alone: the share of queries "
            "whose first passage is relevant. Document order puts the table first.",
            "",
            _row(["fine stage", "first passage relevant", "queries", "passages per gold document"]),
            "|---|---:|---:|---:|",
        ]
        for spec, r in loc.items():
            out.append(_row([spec, f"{r['first_is_relevant']:.4f}", r["queries"], r["passages_per_gold_document"]]))
        out.append("")
    long = results.get("long")
    if long:
        out += [
            f"## Long documents: {long['dataset']}",
            "",
            f"Each judgment cut into passages of about {long['chunk_words']} words, the first {long['max_chunks']} "
            f"kept; {long['queries']} {long['split']} queries, document-level qrels as given. Nothing was trained or "
            "chosen on this set.",
            "",
            _row(["representation", "nDCG@10", "R@10"]),
            "|---|---:|---:|",
        ]
        for name, system in long["systems"].items():
            out.append(_row([name, _num(system["means"]["nDCG@10"]), _num(system["means"]["R@10"])]))
        out.append("")
    return "\n".join(out)
