"""The report's claims, each computed from the results so it states their numbers: which source wins where, and
where SmolLM2-135M is too weak to carry a claim (those point at the gpu profile).

A difference is called significant at p < 0.05 (paired t-test); the cpu profile's samples are small, so most are
not, and the claims say so rather than read a direction into noise.
"""

from __future__ import annotations

from typing import Any

from studies.report_format import format_p
from studies.rvg.measures import hyde_base

ALPHA = 0.05
GPU = "`python -m studies.rvg --config studies/rvg/configs/gpu.toml`"
WEAK = "{model} is too weak for this claim (see the gpu profile below)"
GPU_NOTE = (
    "The gpu profile, {gpu}, runs the same stages on the full test sets and larger samples; its results are not in "
    "this report. A claim marked too weak above needs a stronger generator as well: set `model` (and the `genread`, "
    "`mix` and `hyde` specs' `llm=`) to a larger instruct model there."
)
MODEL_NAMES = {"smollm2": "SmolLM2-135M"}
SKEWED = 0.8  # a closed-set generator that gives one answer this often is not reading its context


def _calls(n: float) -> str:
    return f"{n:g} LLM call" + ("" if n == 1 else "s")


def _test(test: dict[str, float] | None) -> str:
    if not test:
        return "no test"
    verdict = "significant" if test["p"] < ALPHA else "not significant"
    return f"{test['delta']:+.3f}, p {format_p(test['p'])}, {verdict}"


def model_name(spec: str) -> str:
    """The generator as the report names it: SmolLM2-135M for the packaged default, else its spec."""
    return MODEL_NAMES.get(spec, f"`{spec}`")


def weak(reason: str, model: str = "smollm2") -> str:
    """A claim the generator `model` cannot carry: why, and the pointer to the gpu profile."""
    return f"{reason}: {WEAK.format(model=model_name(model))}."


def qa_claims(name: str, record: dict[str, Any], retrievers: list[str], model: str = "smollm2") -> list[str]:
    """One set's QA claims: the winner, generation against retrieval, the mix, and where the model is too weak."""
    rows = record["conditions"]
    closed, genread = rows["closed-book"], rows.get("genread")
    best = max(rows, key=lambda c: rows[c]["F1"])
    out = [
        f"**{name}**: the best context is **{best}** (F1 {rows[best]['F1']:.3f}); closed-book scores "
        f"{closed['F1']:.3f}"
        + ("." if best == "closed-book" else f" ({_test(rows[best]['tests'].get('closed-book'))}).")
    ]
    present = [r for r in retrievers if r in rows]
    if genread and present:
        top = max(present, key=lambda r: rows[r]["F1"])
        line = f"GenRead's own passage reaches F1 {genread['F1']:.3f} against {rows[top]['F1']:.3f} for {top}"
        if record.get("answer_recall"):
            line += (
                f"; its passage holds a gold answer for {genread['recall@1']:.0%} of questions, {top}'s first "
                f"document for {rows[top]['recall@1']:.0%}"
            )
        out.append(line + ".")
        behind = record.get("answer_recall") and genread["recall@1"] < 0.5 * rows[top]["recall@1"]
        if genread["F1"] <= closed["F1"] + 0.01:
            reason = f"GenRead does not beat closed-book on {name} (F1 {genread['F1']:.3f} vs {closed['F1']:.3f})"
        elif behind:
            reason = f"GenRead's passages on {name} hold the answer less than half as often as {top}'s first document"
        else:
            reason = ""
        if reason:
            out.append(weak(f"{reason}, so the data cannot say whether an LLM's own passages rival retrieval", model))
    mixed = rows.get("mixed")
    if mixed:
        out.append(
            f"The mix chosen on train (`{mixed['spec']}`) scores F1 {mixed['F1']:.3f} on test "
            f"(against {record['baseline']}: {_test(mixed['tests'].get(record['baseline']))})."
        )
    for label, row in rows.items():
        shares = row.get("answer_shares")
        if shares and max(shares.values()) >= SKEWED:
            top = max(shares, key=shares.get)
            out.append(
                weak(
                    f"On {name} the closed-set generator answers '{top}' to {shares[top]:.0%} of questions with "
                    f"{label} context, whatever the evidence",
                    model,
                )
            )
            break
    return out


def rank_claims(name: str, record: dict[str, Any], model: str = "smollm2") -> list[str]:
    """One set's ranking claims: the winner against the baseline, and HyDE against the retriever it expands."""
    systems, baseline = record["systems"], record["baseline"]
    best = max(systems, key=lambda s: systems[s]["nDCG@10"])
    out = [
        f"**{name}**: **{best}** ranks best (nDCG@10 {systems[best]['nDCG@10']:.3f}"
        + (
            ", the baseline itself)."
            if best == baseline
            else f"; {baseline} {systems[baseline]['nDCG@10']:.3f}, {_test(systems[best].get('vs_baseline'))})."
        )
    ]
    for spec, row in systems.items():
        base_spec = hyde_base(spec)
        if base_spec not in systems:
            continue
        base = systems[base_spec]
        delta = row["nDCG@10"] - base["nDCG@10"]
        seconds = ""
        if row.get("cached_passages") == 0:  # timed as written: no passage came from the cache
            seconds = f", {row['seconds_per_query']:.2f} s against {base['seconds_per_query']:.2f} s"
        line = (
            f"{spec} {'gains' if delta > 0 else 'loses' if delta < 0 else 'changes'} {abs(delta):.3f} nDCG@10 "
            f"against {base_spec} "
            f"({_test(row.get('vs_expanded'))}) at {_calls(row['llm_calls_per_query'])} and "
            f"{row['generated_tokens_per_query']:.0f} generated tokens per query{seconds}"
        )
        significant = row.get("vs_expanded", {}).get("p", 1.0) < ALPHA
        if delta > 0:
            out.append(line + ".")
        else:
            hurt = "a hypothetical document from this model adds noise" if significant else "it does not help"
            out.append(weak(f"{line}; {hurt}", model))
    return out


def lm_claims(name: str, record: dict[str, Any], model: str = "smollm2") -> list[str]:
    """One set's language-modelling claims: what retrieved and generated context do to perplexity."""
    rows, tests = record["conditions"], record["tests"]
    out = [
        f"**{name}**: perplexity {rows['none']['perplexity']:.1f} alone, {rows['bm25']['perplexity']:.1f} after "
        f"BM25's documents (mean NLL {_test(tests['bm25 vs none'])}), {rows['generated']['perplexity']:.1f} after "
        f"a generated passage ({_test(tests['generated vs none'])})."
    ]
    if rows["bm25"]["leaks"]:
        out.append(
            f"{rows['bm25']['leaks']} of {record['passages']} BM25 contexts repeat the target's first words (a "
            "duplicate document), so part of BM25's gain there is copying."
        )
    if rows["generated"]["perplexity"] >= rows["none"]["perplexity"]:
        out.append(weak(f"On {name} a passage the model wrote itself does not lower its perplexity on the text", model))
    return out
