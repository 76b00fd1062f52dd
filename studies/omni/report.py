"""reports/omni-rag.md and its figure from the study's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studies.report_format import DASH, format_p, pyplot, save_png

METRICS = ("nDCG@10", "intent_recall@10", "both_intents@10")


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _p(test: dict[str, float] | None) -> str:
    return DASH if not test else f"{test['delta']:+.4f} (p {format_p(test['p'])})"


def figure(results: dict[str, Any], path: Path) -> Path | None:
    """nDCG@10 and both-intents@10 of each system against the typo rate."""
    plt = pyplot()
    synthetic = results.get("synthetic")
    if plt is None or not synthetic:
        return None
    rates = sorted(synthetic["rates"], key=float)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, metric in zip(axes, ("nDCG@10", "both_intents@10"), strict=True):
        for system in synthetic["rates"][rates[0]]:
            axis.plot(
                [100 * float(r) for r in rates],
                [synthetic["rates"][r][system][metric] for r in rates],
                marker="o",
                label=system,
            )
        axis.set_xlabel("typo rate (% of words)")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_png(plt, fig, path)


def markdown(results: dict[str, Any], command: str, figure_name: str | None) -> str:
    """The report as Markdown."""
    out = ["# Query understanding (Omni-RAG) on 2 CPU cores", "", f"Reproduce: `{command}`", ""]
    hotpot = results.get("hotpot")
    if hotpot:
        out += [
            f"## {hotpot['dataset']}: both supporting paragraphs in the top 5",
            "",
            f"First stage `{hotpot['first_stage']}`; the aggregation was chosen on the train questions "
            f"(**{hotpot['chosen']}**; train both@5: "
            + ", ".join(f"{a} {v:.3f}" for a, v in hotpot["train_both5"].items())
            + f"). {hotpot['test_queries']} test questions.",
            "",
            _row(["system", "both@5", "nDCG@10", "questions split"]),
            "|---|---:|---:|---:|",
        ]
        for name, row in hotpot["systems"].items():
            label = "raw question" if name == "raw" else f"understood, {name}"
            out.append(_row([label, f"{row['both@5']:.4f}", f"{row['nDCG@10']:.4f}", row.get("split_share", DASH)]))
        out += [
            "",
            f"Chosen against raw: both@5 {_p(hotpot['tests']['both@5'])}, "
            f"nDCG@10 {_p(hotpot['tests']['nDCG@10'])} (paired t-test).",
            "",
        ]
    synthetic = results.get("synthetic")
    if synthetic:
        out += [
            "## The noisy multi-intent benchmark",
            "",
            f"{synthetic['test_pairs']} test pairs (train pairs: {synthetic['train_pairs']}) from "
            f"{', '.join(synthetic['datasets'])}, searched over their combined corpus with "
            f"`{synthetic['first_stage']}`. Chosen on train pairs at {synthetic['chosen_at_noise']:.0%} typos: the "
            f"speller's max edit distance **{synthetic['speller_distance']}** (nDCG@10 "
            + ", ".join(f"{d}: {v:.3f}" for d, v in synthetic["speller_on_train"].items())
            + f") and the aggregation **{synthetic['aggregate']}** (both-intents@10 "
            + ", ".join(f"{a}: {v:.3f}" for a, v in synthetic["aggregate_on_train"].items())
            + "). Differences are against the raw query at the same typo rate (paired t-test).",
            "",
            _row(["typos", "system", *METRICS, "Δ nDCG@10", "Δ both-intents@10", "split", "ms/query", "LLM calls"]),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for rate, rows in sorted(synthetic["rates"].items(), key=lambda item: float(item[0])):
            for name, row in rows.items():
                vs = row.get("vs_raw", {})
                out.append(
                    _row(
                        [
                            f"{float(rate):.0%}",
                            name,
                            *(f"{row[m]:.4f}" for m in METRICS),
                            _p(vs.get("nDCG@10")),
                            _p(vs.get("both_intents@10")),
                            DASH if row["split_share"] is None else f"{row['split_share']:.2f}",
                            row["ms_per_query"],
                            row["llm_calls_per_query"],
                        ]
                    )
                )
        recovery = synthetic["denoising_recovery"]
        out += [
            "",
            "Share of the nDCG@10 that the typos cost which the speller recovers: "
            + ", ".join(f"{k}: {DASH if v is None else f'{v:.0%}'}" for k, v in recovery.items())
            + ".",
            "",
        ]
        if figure_name:
            out += [f"![metrics against the typo rate]({figure_name})", ""]
    routing = results.get("routing")
    if routing:
        out += [
            "## Per-intent routing",
            "",
            f"Test pairs whose intents come from two of the router's domains ({', '.join(routing['domains'])}); "
            f"router `{routing['router']}`. A pair counts when it is split into two sub-queries and each goes to its "
            "own domain's expert.",
            "",
            _row(["typos", "pairs", "split into two", "both to their own expert", "share", "raw joined query"]),
            "|---|---:|---:|---:|---:|---|",
        ]
        for rate, row in routing["rates"].items():
            raw = ", ".join(f"{k}: {v}" for k, v in row["raw_query"].items())
            share = DASH if row["share_of_pairs"] is None else f"{row['share_of_pairs']:.1%}"
            out.append(
                _row([f"{float(rate):.0%}", row["pairs"], row["split_into_two"], row["both_to_own_expert"], share, raw])
            )
        out.append("")
    out += llm_section(results.get("llm"))
    return "\n".join(out)


def llm_section(llm: dict[str, Any] | None) -> list[str]:
    """The LLM stage's tables: denoisers, decomposers and the multi-query baseline against the raw query."""
    if not llm:
        return []
    out = ["## With an LLM", ""]
    synthetic = llm.get("synthetic")
    if synthetic:
        shares = synthetic["denoising_recovery"].items()
        recovery = ", ".join(f"{k} {DASH if v is None else f'{v:.0%}'}" for k, v in shares)
        out += [
            f"The first {synthetic['pairs']} test pairs at {synthetic['noise']:.0%} typos, `{llm['first_stage']}`, "
            f"every LLM call to `{llm['model']}`. Without typos the raw query reaches nDCG@10 "
            f"{synthetic['clean_raw_nDCG@10']:.4f}; share of what the typos cost that each denoiser recovers: "
            f"{recovery}. Differences are against the raw query (paired t-test). Systems: `rules`, `llm` and "
            "`auto` decompose by rules, by the LLM, or by rules and then the LLM where they do not split; "
            "`multi-query` is three LLM rephrasings merged as the frameworks merge them (in query order), "
            "`multi-query-rr` the same rephrasings interleaved. LLM outputs are generated in batches before the "
            "systems run (or come from the generation cache), so ms/query leaves generation out: each LLM call "
            "costs about 1-3 s on 2 CPU cores.",
            "",
            _row(["system", *METRICS, "Δ nDCG@10", "Δ both-intents@10", "ms/query", "LLM calls"]),
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in synthetic["systems"].items():
            vs = row.get("vs_raw", {})
            out.append(
                _row(
                    [
                        name,
                        *(f"{row[m]:.4f}" for m in METRICS),
                        _p(vs.get("nDCG@10")),
                        _p(vs.get("both_intents@10")),
                        row["ms_per_query"],
                        row["llm_calls_per_query"],
                    ]
                )
            )
        out.append("")
    hotpot = llm.get("hotpot")
    if hotpot:
        out += [
            f"The first {hotpot['questions']} hotpotqa-500 test questions (aggregation {hotpot['aggregate']}):",
            "",
            _row(["system", "both@5", "nDCG@10", "Δ both@5", "Δ nDCG@10", "ms/query", "LLM calls"]),
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in hotpot["systems"].items():
            vs = row.get("vs_raw", {})
            out.append(
                _row(
                    [
                        name,
                        f"{row['both@5']:.4f}",
                        f"{row['nDCG@10']:.4f}",
                        _p(vs.get("both@5")),
                        _p(vs.get("nDCG@10")),
                        row["ms_per_query"],
                        row["llm_calls_per_query"],
                    ]
                )
            )
        out.append("")
    return out
