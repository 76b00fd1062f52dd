"""reports/llm-training.md (+ .json and the reward-curve figure) from whatever stages of the experiment exist.

The claims are checked on the table as it stands, never tuned: "the best trained reranker" is the trained system
with the highest SciFact nDCG@10 on the test sample (a pick among several on the same queries, so its margin is an
upper estimate), and the claims that compare stages compare each dataset's sample.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from routerank.fsutil import atomic_write
from routerank.stages import Stage
from studies.llm_training.claims import KEY, PRIMARY, Claim, check_claims, value_at, why
from studies.llm_training.collect import (
    MEASURES,
    REFERENCES,
    carry,
    collect,
    curve_summary,
    first_pick,
    random_order,
    reward_curves,
    training,
    unchanged_adapters,
)
from studies.llm_training.config import INFERENCE_VARIANTS, UNTRAINED
from studies.report_format import format_p, format_seconds, format_value, pyplot, save_png

if TYPE_CHECKING:
    from studies.llm_training.experiment import LLMTrainingExperiment

COMMAND = "python -m studies.llm_training"
SMOOTH = 10  # steps in the reward curve's running mean
TITLES = {
    "bm25": "BM25 (the candidates)",
    "zero-shot": "zero-shot pointwise (yes/no, untrained)",
    "sft": "SFT (BCE on yes/no)",
    "contrastive": "contrastive LoRA (InfoNCE, the R2R expert objective)",
    "dear": "DeAR stages 1 + 2 (listwise on stage 1)",
    "shuffled-dear": "DeAR stages 1 + 2, candidates shown in a seeded random order (position check)",
    "prorank-stage1": "ProRank stage 1 only (GRPO warmup)",
    "prorank": "ProRank stages 1 + 2",
    "rank-r1": "Rank-R1 setwise (GRPO)",
    "teacher": "the teacher (DeAR's)",
}


TERM_NAMES = {"ce": "CE", "ranknet": "RankNet", "kl": "KL"}


def terms_title(terms: str) -> str:
    """ "ce+kl" -> "CE + KL"."""
    return " + ".join(TERM_NAMES[t] for t in terms.split("+"))


def title(experiment: LLMTrainingExperiment, system: str) -> str:
    """A row's title in the report's tables."""
    if system == "dear-stage1":
        return f"DeAR stage 1 ({terms_title(experiment.dear_configs()[system].name.removeprefix('dear-'))})"
    if system in TITLES:
        return TITLES[system]
    terms = system.removeprefix("dear-")
    return f"DeAR stage 1, {terms_title(terms)}" + (" only" if "+" not in terms else "")


# the figure ------------------------------------------------------------------------------------------------------


def reward_figure(curves: dict, path: Path) -> Path | None:
    """Every GRPO run's reward curves side by side, with the reward's running mean (None: no curve, or no
    matplotlib)."""
    plt = pyplot()
    if plt is None or not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.2), squeeze=False)
    for ax, (system, series) in zip(axes[0], curves.items(), strict=True):
        for name, curve in series.items():
            if curve:
                steps, values = zip(*curve, strict=True)
                marker = "o" if len(steps) < 20 else None
                ax.plot(steps, values, label=name, lw=1.0, marker=marker, ms=3, alpha=0.8)
                if name == "reward" and len(values) >= 2 * SMOOTH:
                    mean = [sum(values[i - SMOOTH : i]) / SMOOTH for i in range(SMOOTH, len(values) + 1)]
                    ax.plot(steps[SMOOTH - 1 :], mean, label=f"reward, {SMOOTH}-step mean", lw=2.0, color="black")
        top = max([1.0, *(v for curve in series.values() for _, v in curve)])
        ax.set_title(f"{system} (GRPO)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.set_ylim(-0.05, top + 0.05)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(plt, fig, path)


# the report ------------------------------------------------------------------------------------------------------


def effectiveness_lines(experiment: LLMTrainingExperiment, table: dict, stages: list[Stage] | None) -> list[str]:
    """One table per dataset: every row's measures, p-values, cost and status."""
    lines = []
    for dataset in experiment.config.datasets:
        lines += [
            f"### {dataset}",
            "",
            "| system | nDCG@10 | p vs BM25 | p vs zero-shot | MRR@10 | p vs BM25 | p vs zero-shot "
            "| s / query | LLM passes / query | status |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for system in experiment.systems():
            row = table.get(system, {}).get(dataset)
            if row is None:
                note = pending_note(stages, system, dataset)
                lines.append(f"| {title(experiment, system)} | – | – | – | – | – | – | – | – | {note} |")
                continue
            cells = []
            for m in MEASURES:
                cells += [format_value(row[m])] + [format_p(row.get(f"p_vs_{ref}", {}).get(m)) for ref in REFERENCES]
            passes = row.get("calls_per_query", row.get("forward_passes_per_query"))
            status = "carried" if row.get("carried") else "done"
            cells += [f"{row['seconds_per_query']:.2f}", format_value(passes, 1), status]
            lines.append(f"| {title(experiment, system)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def pending_note(stages: list[Stage] | None, system: str, dataset: str) -> str:
    """Why a row is empty, in the runner's words: its training stage's note while that is unfinished, else its
    scoring stage's."""
    notes = {stage.name: stage.note for stage in stages or [] if not stage.done}
    trains = f"train {INFERENCE_VARIANTS.get(system, system)}"  # a variant waits on its base's training
    if trains in notes:
        return f"training {notes[trains]}"
    if f"score {system} on {dataset}" in notes:
        return f"scoring {notes[f'score {system} on {dataset}']}"
    return "pending"


def write_report(
    experiment: LLMTrainingExperiment,
    stages: list[Stage] | None,
    report: Path,
    config_path: Path | None = None,
    *,
    carried: dict | None = None,
) -> Path:
    """Write the report from the work dir; `carried` (`read_carried`) fills in the rows this work dir lacks."""
    c = experiment.config
    table = collect(experiment)
    trainings = training(experiment)
    curves = reward_curves(experiment)
    unchanged = unchanged_adapters(experiment)
    specs = {s: experiment.spec(s) for s in experiment.systems()}
    rows = carry(carried, experiment.systems(), table, trainings, curves, unchanged, specs) if carried else []
    curves = {s: curves[s] for s in experiment.systems() if s in curves}  # carried ones in the report's order
    trained = [s for s in experiment.systems() if s not in UNTRAINED and s not in INFERENCE_VARIANTS]
    ablations = experiment.ablations() if "dear" in c.methods else {}
    claims = check_claims(
        table,
        c.datasets,
        trained=trained,
        dear_all=ablations.get("ce+ranknet+kl"),
        dear_ce=ablations.get("ce"),
        prorank="prorank" in c.methods,
    )
    first = first_pick(experiment)
    notes = why(table, trainings, curves, random_order(experiment), first)
    figure = reward_figure(curves, report.with_suffix("") / "reward-curves.png")
    data = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()},
        "work_dir": str(experiment.work),
        "protocol": experiment.protocol(),
        "specs": specs,
        "table": table,
        "training": trainings,
        "reward_curves": curves,
        "unchanged_adapters": unchanged,
        "first_pick": first,
        "carried_from": carried["source"] if rows else None,
        "carried_rows": [list(pair) for pair in rows],
        "dear_ablations": ablations,
        "claims": [asdict(claim) for claim in claims],
        "notes": notes,
        "stages": [asdict(s) for s in stages or []],
    }
    with atomic_write(report.with_suffix(".json")) as out:
        json.dump(data, out, indent=2)
    lines = markdown(experiment, data, claims, config_path, figure, report, stages)
    with atomic_write(report) as out:
        out.write("\n".join(lines) + "\n")
    return report


def intro_lines(experiment: LLMTrainingExperiment, config_path: Path | None, stages: list[Stage] | None) -> list[str]:
    """The title, how many stages are done, the protocol and the command that resumes it."""
    c = experiment.config
    done = sum(s.done for s in stages or [])
    command = f"{COMMAND} --config " + shlex.quote(str(config_path or "<config>"))
    sample = f"{c.test_queries} seeded test queries" if c.test_queries else "every test query"
    return [
        f"# LLM reranker training (issue 12): {c.profile} profile",
        "",
        f"{done} of the {len(stages or [])} stages run here are done"
        + ("." if done == len(stages or []) else "; a row whose stages have not run shows – and says why."),
        f"Every system reranks BM25's top {c.depth} of the same {sample} per dataset (seed {c.seed}); the trained "
        f"ones are LoRA adapters on `{c.backbone}`. Paired two-sided t-tests per query; no setting was chosen "
        "on these test queries.",
        "",
        "```",
        command + "   # resumes: finished stages are skipped",
        "```",
        "",
        "## Effectiveness",
        "",
    ]


def carried_lines(experiment: LLMTrainingExperiment, data: dict) -> list[str]:
    """Which rows come from an earlier report, and what that means for them."""
    if not data.get("carried_rows"):
        return []
    systems = sorted({system for system, _ in data["carried_rows"]}, key=experiment.systems().index)
    return [
        f"Rows whose status is *carried* ({', '.join(f'`{s}`' for s in systems)}) come from "
        f"`{data['carried_from']}`: an earlier run of this protocol whose runs and adapters are not in this work "
        "dir. Their figures, p-values and training records are as measured then; their p-values are against "
        "that run's BM25 and zero-shot rankings of the same queries.",
        "",
    ]


def claim_lines(data: dict, claims: list[Claim]) -> list[str]:
    """The claims' table and the evidence beside each."""
    lines = [
        "LLM passes / query: prompts judged (setwise) or forward passes (pointwise: batches; listwise: decoding "
        "steps), counted in the scoring run (a cached score costs none).",
        "",
        "## Claims",
        "",
        f"The best trained reranker is the trained system with the highest {PRIMARY} {KEY} on this sample: a pick "
        'among several on the test queries, so its margin is an upper estimate. "Beats" is strict; "≥" is '
        "checked on every dataset.",
        "",
        "| claim | status | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {k.claim} | **{k.status}** | {k.detail} |" for k in claims]
    lines.append("")
    for key, label in (("gain", "margin over zero-shot"), ("prorank", "ProRank"), ("dear", "DeAR")):
        lines += [f"- {label}: {note}" for note in data["notes"].get(key, [])]
    return lines


def training_lines(experiment: LLMTrainingExperiment, trainings: dict) -> list[str]:
    """Each trained row's steps and seconds, alone and with the stages before it."""
    lines = ["", "## Training time and steps", "", "| system | steps | one step | seconds | with earlier stages |"]
    lines.append("|---|---:|---|---:|---:|")
    for system in experiment.systems():
        record = trainings.get(system)
        if record is not None:
            name = title(experiment, system) + (" (carried)" if record.get("carried") else "")
            lines.append(
                f"| {name} | {record['steps']} | {record['unit']} | {format_seconds(record['seconds'])} "
                f"| {format_seconds(record['total_seconds'])} |"
            )
    return lines


def reward_lines(data: dict, figure: Path | None, report: Path) -> list[str]:
    """The GRPO reward curves (figure and summary), Rank-R1's format SFT, and adapters that never changed."""
    lines = ["", "## GRPO reward curves", ""]
    if figure is not None:
        lines += [f"![reward curves]({figure.relative_to(report.parent)})", ""]
    for system, series in data["reward_curves"].items():
        summary = ", ".join(
            f"{name} {format_value(s['first'], 3)} → {format_value(s['last'], 3)}"
            for name, s in ((n, curve_summary(v)) for n, v in series.items())
        )
        steps = len(series["reward"])
        lines.append(f"- `{system}`: {steps} step{'s' if steps != 1 else ''}; first → last tenth: {summary}")
    if not data["reward_curves"]:
        lines.append("No GRPO run has finished yet.")
    for system, record in data["training"].items():
        sft = record.get("format_sft")
        if sft:
            loss = f"{format_value(sft['loss']['first'], 3)} → {format_value(sft['loss']['last'], 3)}"
            lines.append(
                f"- `{system}` first trained a format SFT (a cold start): {sft['records']} records × {sft['epochs']} "
                f"epochs, {sft['steps']} steps in {format_seconds(sft['seconds'])}; its loss on the target completions "
                f"went {loss} (first → last tenth)."
            )
    for system in data["unchanged_adapters"]:
        lines.append(
            f"- `{system}` never changed its adapter: every completion in every group got the same reward, so every "
            "advantage was 0 and so was every gradient; its LoRA B weights are still all zero, and its rows score "
            "the untrained backbone."
        )
    return lines


def spec_lines(data: dict) -> list[str]:
    """Every row's reranker spec, the work dir abbreviated."""
    lines = ["", "## Systems", "", f"Reranker specs (`<work>` = `{data['work_dir']}`):", ""]
    lines += ["| system | spec |", "|---|---|"]
    for system, spec in data["specs"].items():
        shown = "not trained yet" if spec is None else f"`{spec.replace(data['work_dir'], '<work>')}`"
        lines.append(f"| {system} | {shown} |")
    return lines


def markdown(
    experiment: LLMTrainingExperiment,
    data: dict,
    claims: list[Claim],
    config_path: Path | None,
    figure: Path | None,
    report: Path,
    stages: list[Stage] | None,
) -> list[str]:
    """The report's lines, section by section."""
    lines = intro_lines(experiment, config_path, stages)
    lines += effectiveness_lines(experiment, data["table"], stages) + carried_lines(experiment, data)
    lines += claim_lines(data, claims) + training_lines(experiment, data["training"])
    lines += reward_lines(data, figure, report)
    lines += ["", "## DeAR loss ablation (stage 1)", ""]
    lines += ablation_lines(experiment, data)
    return lines + spec_lines(data)


def ablation_lines(experiment: LLMTrainingExperiment, data: dict) -> list[str]:
    """DeAR's stage-1 loss ablation: each set of terms on every dataset, against CE only."""
    c, table, ablations = experiment.config, data["table"], data["dear_ablations"]
    if not ablations:
        return ["DeAR is not in this profile."]
    ce = ablations.get("ce")
    lines = [
        "| loss terms | system | " + " | ".join(c.datasets) + " | Δ vs CE only (mean) | steps | seconds |",
        "|---|---|" + "---:|" * len(c.datasets) + "---:|---:|---:|",
    ]
    for terms, system in ablations.items():
        values = [value_at(table, system, d) for d in c.datasets]
        base = [value_at(table, ce, d) for d in c.datasets] if ce else []
        delta = "–"
        if base and None not in values and None not in base:
            delta = f"{sum(values) / len(values) - sum(base) / len(base):+.4f}"
        record = data["training"].get(system, {})
        lines.append(
            f"| {terms_title(terms)} | `{system}` | "
            + " | ".join(format_value(v) for v in values)
            + f" | {delta} | {record.get('steps', '–')} | {format_seconds(record.get('seconds'))} |"
        )
    return lines
