"""The starter's figures as data (`results_table`) and as the Markdown table the report and README show."""

from __future__ import annotations

from typing import Any

from routerank.evaluate import paired_test
from studies.report_format import format_p

SYSTEMS = ("bm25", "first", "generalist", "expert", "routed")
TITLES = {
    "bm25": "BM25",
    "first": "first stage",
    "generalist": "generalist~auto",
    "expert": "own expert~auto",
    "routed": "routed~auto",
    "generalist-plain": "generalist alone",
    "expert-plain": "own expert alone",
    "routed-plain": "routed alone",
}


def results_table(tests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per dataset: nDCG@10 of every system, and paired tests of each system against BM25 and the first stage."""
    table = {}
    for name, record in tests.items():
        per_query = record["per_query"]
        rows = {}
        for system, values in per_query.items():
            row: dict[str, Any] = {"nDCG@10": round(sum(values.values()) / max(len(values), 1), 4)}
            for base in ("bm25", "first"):
                if system != base:
                    test = paired_test(per_query[base], values)
                    row[f"vs_{base}"] = {
                        "delta": round(test.delta, 4),
                        "p": test.t_pvalue,
                        "p_perm": test.randomization_pvalue,
                    }
            rows[system] = row
        table[name] = {
            "queries": record["queries"],
            "depth": record["depth"],
            "routed_to": record["routed_to"],
            "systems": rows,
        }
    return table


def markdown(table: dict[str, Any]) -> str:
    """nDCG@10 per system (rows) and dataset (columns); † marks p < 0.05 against BM25 (paired t-test), ‡ against
    the first stage, in the direction of the delta's sign."""
    names = list(table)
    systems = [s for s in TITLES if all(s in table[n]["systems"] for n in names)]
    lines = [
        "| system | " + " | ".join(f"{n} ({table[n]['queries']})" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for system in systems:
        cells = []
        for n in names:
            row = table[n]["systems"][system]
            marks = ""
            for base, mark in (("bm25", "†"), ("first", "‡")):
                test = row.get(f"vs_{base}")
                if test and test["p"] < 0.05:
                    marks += mark if test["delta"] > 0 else f"-{mark}"
            cells.append(f"{row['nDCG@10']:.3f}{marks}")
        lines.append(f"| {TITLES[system]} | " + " | ".join(cells) + " |")
    routed = ", ".join(f"{n}: " + " ".join(f"{k} {v}" for k, v in sorted(table[n]["routed_to"].items())) for n in names)
    lines.append("")
    lines.append(f"Queries per expert (routed): {routed}. p-values: {', '.join(_p_notes(table))}.")
    return "\n".join(lines)


def _p_notes(table: dict[str, Any]) -> list[str]:
    notes = []
    for n, entry in table.items():
        routed = entry["systems"].get("routed", {})
        for base in ("bm25", "first"):
            test = routed.get(f"vs_{base}")
            if test:
                notes.append(f"{n} routed vs {base} {test['delta']:+.3f} (p {format_p(test['p'])})")
    return notes
