"""reports/retrieval-vs-generation.md and its figure from the study's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from studies.report_format import DASH, format_p, format_value, pyplot, save_png
from studies.rvg.claims import GPU, GPU_NOTE, lm_claims, model_name, qa_claims, rank_claims

LM_CONDITIONS = ("none", "bm25", "generated")
LM_TESTS = ("bm25 vs none", "generated vs none", "generated vs bm25")
CACHE_NOTE = (
    "Every answer and passage is kept in the generation cache, and one passage serves every source that asks for "
    "it (GenRead's serve the mix; hyde(bm25)'s serve hyde(dense)). † marks a row whose answers, ‡ one whose "
    "passages, came partly from that cache: its seconds undercount, its LLM calls and tokens (counted as written) "
    "do not."
)
QA_HEAD = ("condition", "context", "EM", "F1", "recall@1", "recall@5", "Δ F1 vs closed-book")
QA_TAIL = ("s/query", "LLM calls/query", "tokens/query")
LM_COLUMNS = (
    "set",
    "documents",
    "target tokens",
    *(f"ppl {c}" for c in LM_CONDITIONS),
    *(f"Δ NLL {t}" for t in LM_TESTS),
    "leaks",
    "s/passage written",
)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _rule(left: int, right: int) -> str:
    return "|" + "---|" * left + "---:|" * right


def _p(test: dict[str, float] | None) -> str:
    return DASH if not test else f"{test['delta']:+.4f} (p {format_p(test['p'])})"


def _template(name: str) -> str:
    return f"the `{name}` answer template" if name else "its family's default answer template"


def marks(row: dict[str, Any]) -> str:
    """† when answers came from the generation cache, ‡ when generated passages may have (their count unknown, or
    some): either way the row's seconds undercount, while its LLM calls and tokens do not."""
    out = " †" if row.get("cached_answers") else ""
    if row.get("passage_tokens_per_query", row["generated_tokens_per_query"]) and row.get("cached_passages") != 0:
        out += " ‡"
    return out


def _sample(n: int | None) -> str:
    return "all" if n is None else str(n)


def matrices(results: dict[str, Any]) -> list[tuple[str, str, dict[str, dict[str, float]], bool]]:
    """Per task: (title, measure, {set: {condition: value}}, lower is better), for the figure and summary tables."""
    out = []
    if results.get("qa"):
        qa = {s: {c: row["F1"] for c, row in r["conditions"].items()} for s, r in results["qa"].items()}
        out.append(("Question answering", "F1", qa, False))
    if results.get("rank"):
        rank = {s: {c: row["nDCG@10"] for c, row in r["systems"].items()} for s, r in results["rank"].items()}
        out.append(("Retrieval and reranking", "nDCG@10", rank, False))
    if results.get("lm"):
        lm = {s: {c: r["conditions"][c]["perplexity"] for c in LM_CONDITIONS} for s, r in results["lm"].items()}
        out.append(("Language modelling", "perplexity", lm, True))
    return out


def figure(results: dict[str, Any], path: Path) -> Path | None:
    """Which source wins where: per task, each set's measure for every condition as grouped bars."""
    plt = pyplot()
    panels = matrices(results)
    if plt is None or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0), squeeze=False)
    for axis, (title, measure, table, lower) in zip(axes[0], panels, strict=True):
        sets = list(table)
        conditions = list(dict.fromkeys(c for row in table.values() for c in row))
        width = 0.8 / len(conditions)
        for i, condition in enumerate(conditions):
            xs = [j + (i - (len(conditions) - 1) / 2) * width for j in range(len(sets))]
            axis.bar(xs, [table[s].get(condition, 0.0) for s in sets], width, label=condition)
        axis.set_xticks(range(len(sets)), sets, fontsize=8)
        axis.set_title(f"{title}: {measure}" + (" (lower is better)" if lower else ""), fontsize=9)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    return save_png(plt, fig, path)


def _summary(measure: str, table: dict[str, dict[str, float]], lower: bool) -> list[str]:
    conditions = list(dict.fromkeys(c for row in table.values() for c in row))
    out = [_row(["set", *conditions, "best"]), _rule(1, len(conditions)) + "---|"]
    for name, row in table.items():
        best = (min if lower else max)(row, key=row.get)
        cells = [f"**{row[c]:.3f}**" if c == best else format_value(row.get(c), 3) for c in conditions]
        out.append(_row([name, *cells, best]))
    return [f"{measure} per set (best in bold):", "", *out, ""]


def _qa_set(name: str, record: dict[str, Any]) -> list[str]:
    baseline = record["baseline"]
    on_train = ", ".join(f"`{s}` {f:.3f}" for s, f in record["mixed_on_train"].items())
    out = [
        f"### {name}",
        "",
        f"{record['test_queries']} test questions; top {record['k']} documents read. The mix was chosen on "
        f"{record['train_queries']} train questions by mean F1 ({on_train}): **`{record['mixed_chosen']}`**.",
    ]
    if record["closed_set"]:
        out[-1] += (
            f" Answers are chosen among {'/'.join(record['closed_set'])} (closed set); answer recall is not measured, "
            "since a passage that holds the word 'no' says nothing of its evidence."
        )
    out += [
        "",
        _row([*QA_HEAD, f"Δ F1 vs {baseline}", *QA_TAIL]),
        _rule(2, 9),
    ]
    for label, row in record["conditions"].items():
        out.append(
            _row(
                [
                    label,
                    DASH if row["spec"] is None else f"`{row['spec']}`",
                    f"{row['EM']:.3f}",
                    f"{row['F1']:.3f}",
                    format_value(row.get("recall@1"), 3),
                    format_value(row.get("recall@5"), 3),
                    _p(row["tests"].get("closed-book")),
                    _p(row["tests"].get(baseline)),
                    f"{row['seconds_per_query']:.2f}{marks(row)}",
                    f"{row['llm_calls_per_query']:g}",
                    f"{row['generated_tokens_per_query']:.1f}",
                ]
            )
        )
    shares = {c: r["answer_shares"] for c, r in record["conditions"].items() if r.get("answer_shares")}
    if shares:
        listed = "; ".join(f"{c} " + ", ".join(f"{a} {v:.0%}" for a, v in s.items()) for c, s in shares.items())
        out += ["", f"Answer shares: {listed}."]
    return [*out, ""]


def _qa(results: dict[str, Any], config: dict[str, Any]) -> list[str]:
    out = [
        "## Question answering",
        "",
        f"Every condition is answered by the same generator, {model_name(config['model'])} "
        f"({_template(config['template'])}, greedy, at most {config['max_new_tokens']} new tokens), "
        f"on a seeded sample of {_sample(config['qa_sample'])} test questions per set. Closed-book is R0 (no context); "
        f"retrieve-then-read reads a pipeline's top {config['k']}; GenRead (`{config['genread']}`) reads a passage the "
        "same model wrote for the question; the mix reads retrieved and generated passages together. Answer recall "
        "is DPR's: whether the context's first 1 (or 5) documents contain a gold answer string; 5 are fetched for it "
        "and a source that gives fewer (GenRead's one passage, a mix of three) counts what it gives. Δ is the "
        "difference in mean F1 with a paired t-test's p. Cost per query: seconds to build the context and answer, "
        "LLM calls (the answer, plus each generated passage) and generated tokens (answer and passages). " + CACHE_NOTE,
        "",
    ]
    out += _summary("F1", matrices({"qa": results})[0][2], False)
    for name, record in results.items():
        out += _qa_set(name, record)
    return out


def _rank(results: dict[str, Any], config: dict[str, Any]) -> list[str]:
    out = [
        "## Retrieval and reranking",
        "",
        f"nDCG@10 on a seeded sample of {_sample(config['rank_sample'])} test queries per set (depth 100). The "
        "protocol differs from the full-test effectiveness table (reports/effectiveness.json): this is a sample, "
        "so its runs are not reused from there and its numbers differ from that table's. Δ is against "
        f"`{config['rank_systems'][0]}` (paired t-test over per-query nDCG@10). HyDE searches with the query plus a "
        "passage the LLM wrote for it; its LLM calls and generated tokens per query are its cost. " + CACHE_NOTE,
        "",
    ]
    out += _summary("nDCG@10", matrices({"rank": results})[0][2], False)
    for name, record in results.items():
        out += [
            f"### {name} ({record['test_queries']} queries)",
            "",
            _row(["system", "nDCG@10", f"Δ vs {record['baseline']}", "s/query", "LLM calls/query", "tokens/query"]),
            _rule(1, 5),
        ]
        for spec, row in record["systems"].items():
            out.append(
                _row(
                    [
                        f"`{spec}`",
                        f"{row['nDCG@10']:.4f}",
                        _p(row.get("vs_baseline")),
                        f"{row['seconds_per_query']:.3f}{marks(row)}",
                        f"{row['llm_calls_per_query']:g}",
                        f"{row['generated_tokens_per_query']:.1f}",
                    ]
                )
            )
        out.append("")
    return out


def _lm(results: dict[str, Any], config: dict[str, Any]) -> list[str]:
    out = [
        "## Language modelling",
        "",
        f"A seeded sample of {config['lm_passages']} corpus documents per set with at least {config['lm_min_tokens']} "
        f"words, cut to their first {config['lm_max_words']} words and split at the middle word; the second half is "
        f"the target. Its perplexity under {model_name(config['model'])} given the first half alone (none), after "
        f"BM25's top {config['lm_k']} documents for the first half (the document itself excluded), or after a "
        "passage the model wrote for the first half (generated); context passages are cut to "
        f"{config['lm_doc_words']} words. Perplexity is corpus-level, exp(sum of NLL / target tokens); Δ is the "
        "difference in per-document mean NLL (nats per token, negative is better) with a paired t-test's p. Leaks "
        "count BM25 contexts that repeat the target's first 8 words (a duplicate document). ‡: the passages may "
        "have come from the generation cache, so the seconds to write one undercount.",
        "",
        _row(list(LM_COLUMNS)),
        _rule(1, 10),
    ]
    for name, record in results.items():
        rows = record["conditions"]
        out.append(
            _row(
                [
                    name,
                    record["passages"],
                    rows["none"]["target_tokens"],
                    *(f"{rows[c]['perplexity']:.2f}" for c in LM_CONDITIONS),
                    *(_p(record["tests"][t]) for t in LM_TESTS),
                    rows["bm25"]["leaks"],
                    f"{record['generated_cost']['seconds_per_passage']:.2f}"
                    + ("" if record["generated_cost"].get("cached") == 0 else " ‡"),
                ]
            )
        )
    return [*out, ""]


def _claims(results: dict[str, Any], config: dict[str, Any], figure_name: str | None) -> list[str]:
    model = config["model"]
    out = ["## Which source wins where", ""]
    if figure_name:
        out += [f"![which source wins where]({figure_name})", ""]
    claims = [
        c for n, r in results.get("qa", {}).items() for c in qa_claims(n, r, list(config["qa_retrievers"]), model)
    ]
    claims += [c for n, r in results.get("rank", {}).items() for c in rank_claims(n, r, model)]
    claims += [c for n, r in results.get("lm", {}).items() for c in lm_claims(n, r, model)]
    out += [f"- {c}" for c in claims]
    out += ["", GPU_NOTE.format(gpu=GPU)]
    if config["profile"] == "cpu":
        out += [
            "",
            f"The cpu profile's samples ({_sample(config['qa_sample'])} questions, {_sample(config['rank_sample'])} "
            f"ranking queries and {config['lm_passages']} documents per set) are small: a difference that is not "
            "significant here is not evidence of no difference.",
        ]
    return [*out, ""]


def markdown(results: dict[str, Any], command: str, figure_name: str | None) -> str:
    """The report as Markdown."""
    config = results["config"]
    out = [
        "# Retrieval vs generation",
        "",
        f"Reproduce: `{command}` (profile `{config['profile']}`; each stage's result is kept in the work dir, so the "
        "same command resumes). Where does retrieved context beat what the LLM knows or writes itself: for "
        "answering questions, for ranking (HyDE), and for modelling text?",
        "",
    ]
    if results.get("qa"):
        out += _qa(results["qa"], config)
    if results.get("rank"):
        out += _rank(results["rank"], config)
    if results.get("lm"):
        out += _lm(results["lm"], config)
    out += _claims(results, config, figure_name)
    return "\n".join(out)
