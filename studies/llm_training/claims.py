"""Issue 12's done-when conditions, checked on the table as it stands (never tuned), and the evidence beside them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from studies.llm_training.collect import KEY, RANDOM_SHUFFLES, curve_summary
from studies.llm_training.config import INFERENCE_VARIANTS
from studies.report_format import format_seconds, format_value

PRIMARY = "scifact"  # the claims' sample for the zero-shot margin
TARGET_GAIN = 0.30


@dataclass(frozen=True)
class Claim:
    """One claim, its status, and the numbers behind it."""

    claim: str
    status: str  # "holds" | "fails" | "pending"
    detail: str


def value_at(table: dict, system: str | None, dataset: str) -> float | None:
    """`system`'s nDCG@10 on `dataset` in the table (None: no such row or system)."""
    return table.get(system, {}).get(dataset, {}).get(KEY) if system else None


def at_least(table: dict, better: str | None, worse: str | None, datasets: Iterable[str], claim: str) -> Claim:
    """`better` ≥ `worse` on nDCG@10 on every dataset; it fails by the largest shortfall."""
    if better is None or worse is None:
        return Claim(claim, "pending", "not in this profile")
    missing = [d for d in datasets if value_at(table, better, d) is None or value_at(table, worse, d) is None]
    if missing:
        return Claim(claim, "pending", f"no {KEY} yet on {', '.join(missing)}")
    gaps = {d: value_at(table, better, d) - value_at(table, worse, d) for d in datasets}
    shown = "; ".join(f"{d} {gap:+.4f}" for d, gap in gaps.items())
    worst = min(gaps, key=gaps.get)
    if gaps[worst] >= 0:
        return Claim(claim, "holds", f"{better} − {worse}: {shown}")
    return Claim(claim, "fails", f"fails by {-gaps[worst]:.4f} on {worst} ({better} − {worse}: {shown})")


def check_claims(
    table: dict,
    datasets: Iterable[str],
    *,
    trained: list[str],
    dear_all: str | None,
    dear_ce: str | None,
    prorank: bool = True,
) -> list[Claim]:
    """Issue 12's done-when conditions, each "holds", "fails" (by how much) or "pending", on a table of
    {system: {dataset: {"nDCG@10": ...}}}. `trained` lists the trained systems the best is picked from; `dear_all`
    and `dear_ce` name the DeAR ablation systems (None: not run); `prorank` says whether ProRank runs."""
    datasets = list(datasets)
    claims = []
    gain_claim = f"the best trained reranker beats zero-shot pointwise by ≥ {TARGET_GAIN:.2f} {KEY} on {PRIMARY}"
    bm25_claim = "the best trained reranker beats BM25 on every sample"
    scored = [s for s in trained if value_at(table, s, PRIMARY) is not None]
    zero = value_at(table, "zero-shot", PRIMARY)
    if PRIMARY not in datasets:
        absent = f"{PRIMARY}, which is not in this profile"
        claims += [
            Claim(gain_claim, "pending", f"{PRIMARY} is not in this profile"),
            Claim(bm25_claim, "pending", f"the best is picked on {absent}"),
        ]
    elif not scored or zero is None:
        waiting = "no trained system is scored yet" if not scored else "zero-shot is not scored yet"
        claims += [Claim(gain_claim, "pending", waiting), Claim(bm25_claim, "pending", waiting)]
    else:
        best = max(scored, key=lambda s: value_at(table, s, PRIMARY))
        gain = value_at(table, best, PRIMARY) - zero
        of = f"`{best}`, the best of {len(scored)} trained systems scored on {PRIMARY}"
        of += f" ({len(trained) - len(scored)} still pending)" if len(scored) < len(trained) else ""
        detail = f"{of}: {value_at(table, best, PRIMARY):.4f} vs zero-shot {zero:.4f}, gain {gain:+.4f}"
        checks = [
            v for v, base in INFERENCE_VARIANTS.items() if base == best and value_at(table, v, PRIMARY) is not None
        ]
        for variant in checks:  # how much of the best row's score survives its position check
            shown = value_at(table, variant, PRIMARY)
            detail += (
                f"; shown its candidates shuffled (`{variant}`) it scores {shown:.4f}, so "
                f"{value_at(table, best, PRIMARY) - shown:+.4f} of its score comes from the order it is shown"
            )
        if gain >= TARGET_GAIN:
            claims.append(Claim(gain_claim, "holds", detail))
        else:
            claims.append(Claim(gain_claim, "fails", f"fails by {TARGET_GAIN - gain:.4f}: {detail}"))
        below = at_least(table, best, "bm25", datasets, bm25_claim)
        if below.status == "holds" and any(value_at(table, best, d) == value_at(table, "bm25", d) for d in datasets):
            below = Claim(bm25_claim, "fails", f"ties BM25 ({below.detail})")  # "beats" is strict
        claims.append(below)
    stages = ("prorank", "prorank-stage1") if prorank else (None, None)
    claims.append(at_least(table, *stages, datasets, "ProRank both stages ≥ stage 1 only"))
    claims.append(at_least(table, dear_all, dear_ce, datasets, "DeAR with all three loss terms ≥ CE only"))
    return claims


def why(
    table: dict, trainings: dict, curves: dict, random: dict | None = None, first: dict | None = None
) -> dict[str, list[str]]:
    """Evidence beside each claim, from the manifests and the table: what bounds or explains the outcome."""
    notes: dict[str, list[str]] = {"gain": [], "prorank": [], "dear": []}
    teacher, zero = value_at(table, "teacher", PRIMARY), value_at(table, "zero-shot", PRIMARY)
    if teacher is not None and zero is not None:
        notes["gain"].append(f"the teacher itself is {teacher - zero:+.4f} over zero-shot on {PRIMARY}")
    scored = [s for s in trainings if value_at(table, s, PRIMARY) is not None]
    if scored:
        best = max(scored, key=lambda s: value_at(table, s, PRIMARY))
        record = trainings[best]
        kept = f", keeping step {record['best_step']} on dev" if record.get("best_step") is not None else ""
        notes["gain"].append(
            f"`{best}` trained {record['steps']} optimizer steps ({record['unit']}) in "
            f"{format_seconds(record['seconds'])}{kept}: the whole training budget of the profile"
        )
    for variant, base in INFERENCE_VARIANTS.items():
        shown, ordered = value_at(table, variant, PRIMARY), value_at(table, base, PRIMARY)
        if shown is not None and ordered is not None:
            notes["gain"].append(
                f"`{base}` scores {ordered:.4f} on {PRIMARY} with its candidates in BM25's order and {shown:.4f} "
                f"with them shuffled (`{variant}`): {ordered - shown:+.4f} of it comes from the order it is shown"
            )
    if random:
        levels = ", ".join(f"{d} {v:.4f}" for d, v in random.items())
        notes["gain"].append(f"a random order of BM25's candidates scores {levels} ({KEY}, {RANDOM_SHUFFLES} shuffles)")
    for dataset, check in (first or {}).items():
        rank_r1 = format_value(value_at(table, "rank-r1", dataset))
        notes["gain"].append(
            f"`rank-r1` scores {rank_r1} on {dataset}; its heapsort driven by a judge "
            f"that always picks the first passage shown scores {check[KEY]:.4f}, and on {check['same_top']} of the "
            f"{check['queries']} queries with BM25 candidates its top {check['top']} is exactly that judge's: its "
            "score is its position bias"
            if check["same_top"] * 2 > check["queries"]
            else f"`rank-r1`'s heapsort driven by an always-first judge scores {check[KEY]:.4f} on {dataset}; "
            f"on {check['same_top']} of the {check['queries']} queries with BM25 candidates its top {check['top']} is "
            "that judge's"
        )
    for system, summary in ((s, curve_summary(c["reward"])) for s, c in curves.items()):
        if summary["first"] is not None:
            notes["gain" if system == "rank-r1" else "prorank"].append(
                f"{system} reward {summary['first']:.3f} → {summary['last']:.3f} (first → last tenth of its steps)"
            )
    for system, record in trainings.items():
        ranknet = record.get("loss_terms", {}).get("ranknet")
        if ranknet and ranknet["first"] is not None:
            notes["dear"].append(
                f"`{system}` RankNet loss {ranknet['first']:.3f} → {ranknet['last']:.3f} (first → last tenth of its "
                f"steps; ln 2 = {math.log(2):.3f} is a student that orders no teacher pair)"
            )
    if trainings.get("prorank", {}).get("kept_start"):
        notes["prorank"].append("stage 2 never beat its stage-1 start on dev, so it kept the stage-1 weights")
    for system, record in trainings.items():
        if record.get("kept_start") and system != "prorank":
            key = "dear" if system.startswith("dear-") else "gain"
            notes[key].append(f"`{system}` never beat its untrained start on dev, so it kept the start's weights")
    return notes
