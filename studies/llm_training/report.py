"""reports/llm-training.md (+ .json and the reward-curve figure) from whatever stages of the experiment exist.

The claims are checked on the table as it stands, never tuned: "the best trained reranker" is the trained system
with the highest SciFact nDCG@10 on the test sample (a pick among several on the same queries, so its margin is an
upper estimate), and the claims that compare stages compare each dataset's sample.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from routerank.fsutil import atomic_write
from routerank.train.dear import TERMS
from studies.llm_training.config import INFERENCE_VARIANTS, UNTRAINED

MEASURES = ("nDCG@10", "MRR@10")
KEY = "nDCG@10"
PRIMARY = "scifact"  # the claims' sample for the zero-shot margin
TARGET_GAIN = 0.30
REFERENCES = ("bm25", "zero-shot")
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
STEP_UNITS = {
    "sft": "grad_accum groups",
    "contrastive": "grad_accum groups",
    "dear": "grad_accum lists",
    "prorank-stage1": "prompts × completions",
    "prorank": "grad_accum groups",
    "rank-r1": "prompts × completions",
}


TERM_NAMES = {"ce": "CE", "ranknet": "RankNet", "kl": "KL"}


RANDOM_SHUFFLES = 100


def terms_title(terms: str) -> str:
    """ "ce+kl" -> "CE + KL"."""
    return " + ".join(TERM_NAMES[t] for t in terms.split("+"))


def title(experiment, system: str) -> str:
    if system == "dear-stage1":
        return f"DeAR stage 1 ({terms_title(experiment.dear_configs()[system].name.removeprefix('dear-'))})"
    if system in TITLES:
        return TITLES[system]
    terms = system.removeprefix("dear-")
    return f"DeAR stage 1, {terms_title(terms)}" + (" only" if "+" not in terms else "")


# the table -------------------------------------------------------------------------------------------------------


def collect(experiment) -> dict:
    """{system: {dataset: {nDCG@10, MRR@10, queries, p_vs_<ref>: {measure: p}, seconds/query, passes/query}}}
    for every system with a run made by its current spec."""
    from routerank.data.trec import read_run
    from routerank.evaluate import evaluate, paired_test

    table: dict[str, dict] = {}
    for dataset in experiment.config.datasets:
        qrels = experiment.test_qrels(dataset)
        evals = {}
        for system in experiment.systems():
            if not experiment.scored(system, dataset):
                continue
            path = experiment.run_path(system, dataset)
            evals[system] = evaluate(read_run(path), qrels, list(MEASURES))
            meta = json.loads(path.with_suffix(".json").read_text())
            row = {**evals[system].means, "queries": meta["queries"]}
            row["seconds_per_query"] = meta["seconds"] / max(meta["queries"], 1)
            for key in ("forward_passes", "calls"):
                if key in meta:
                    row[f"{key}_per_query"] = meta[key] / max(meta["queries"], 1)
            table.setdefault(system, {})[dataset] = row
        for system, ev in evals.items():
            for ref in (r for r in REFERENCES if r != system and r in evals):
                tests = {m: paired_test(evals[ref].per_query[m], ev.per_query[m]).t_pvalue for m in MEASURES}
                table[system][dataset][f"p_vs_{ref}"] = tests
    return table


def training(experiment) -> dict:
    """Per trained system: seconds and optimizer steps of its own stage, and in all (with the stages before it)."""
    out = {}
    for system in experiment.systems():
        manifest = experiment.manifest(system)
        if manifest is None:
            continue
        metrics = manifest.get("metrics", manifest)  # expert and DeAR manifests nest them; GRPO's do not
        seconds = metrics.get("train_seconds", metrics.get("seconds"))
        record = {"seconds": seconds, "steps": metrics.get("steps"), "best_step": metrics.get("best_step")}
        # with dev data, best step 0 means no step beat the start on dev, and the start's weights were kept
        record["kept_start"] = metrics.get("best_step") == 0 and metrics.get("best_dev_loss") is not None
        record["unit"] = STEP_UNITS.get(system, STEP_UNITS["dear"] if system.startswith("dear") else "")
        before = {"dear": "dear-stage1", "prorank": "prorank-stage1"}.get(system)
        earlier = out.get(before) if before else None
        record["total_seconds"] = (seconds or 0.0) + (earlier["total_seconds"] if earlier else 0.0)
        sft = manifest.get("format_sft")
        if sft:  # Rank-R1's format SFT before GRPO: its own steps, and its time counted in the total
            record["format_sft"] = {k: sft.get(k) for k in ("records", "epochs", "steps", "seconds")}
            record["format_sft"]["loss"] = curve_summary(list(enumerate(sft.get("loss_curve", []))))
            record["total_seconds"] += sft.get("seconds") or 0.0
        if system.startswith("dear") and system != "dear":
            record["loss_terms"] = loss_terms(experiment.adapter_dir(system) / "train_log.jsonl")
        out[system] = record
    return out


def loss_terms(log: Path) -> dict[str, dict]:
    """Each loss term's curve summary (first and last tenth of its logged steps) from a step log."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    out = {}
    for term in TERMS:
        curve = [[r["total_step"], r[term]] for r in records if isinstance(r.get(term), int | float)]
        if curve:
            out[term] = curve_summary(curve)
    return out


def reward_curves(experiment) -> dict:
    """Per GRPO run: the reward curve (step, mean reward) and each reward function's mean per step."""
    out = {}
    for system in ("prorank-stage1", "rank-r1"):
        manifest = experiment.manifest(system) if system in experiment.systems() else None
        if manifest is None:
            continue
        curves = {"reward": manifest.get("reward_curve", [])}
        log = experiment.adapter_dir(system) / "train_log.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
        names = sorted({k for r in records for k in r if k.endswith("_reward")})
        for name in names:
            curves[name] = [[r["step"], r[name]] for r in records if r.get(name) is not None]
        out[system] = curves
    return out


def unchanged_adapters(experiment) -> list[str]:
    """The GRPO runs whose adapter is still the identity (`adapter_is_noop`): their rows score the backbone."""
    from routerank.rerank.adapters import adapter_is_noop

    return [
        system
        for system in ("prorank-stage1", "rank-r1")
        if system in experiment.systems()
        and experiment.manifest(system) is not None
        and adapter_is_noop(experiment.adapter_dir(system))
    ]


def curve_summary(curve: list) -> dict:
    """Mean of the first and last tenth of a curve (at least one point each)."""
    values = [v for _, v in curve]
    if not values:
        return {"first": None, "last": None}
    tenth = max(1, len(values) // 10)
    return {"first": sum(values[:tenth]) / tenth, "last": sum(values[-tenth:]) / tenth}


# carried rows ----------------------------------------------------------------------------------------------------


def read_carried(experiment, path: Path) -> dict:
    """An earlier report's JSON whose rows may fill in systems that have no run here; it must be of this
    experiment's protocol (test sample, seed, depth), backbone and datasets."""
    from routerank.errors import RouterankError

    fix = "carry only from a report of the same protocol, backbone and datasets (reports/llm-training.json)"
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RouterankError("no report to carry rows from", path=path, fix=fix) from None
    except json.JSONDecodeError as exc:
        raise RouterankError(f"not a report JSON: {exc}", path=path, fix=fix) from None
    if not isinstance(data, dict) or not isinstance(data.get("table"), dict):
        raise RouterankError("not an llm-training report JSON (no table)", path=path, fix=fix)
    config = data.get("config", {})
    mine = (experiment.protocol(), experiment.config.backbone, list(experiment.config.datasets))
    theirs = (data.get("protocol"), config.get("backbone"), config.get("datasets"))
    if theirs != mine:
        raise RouterankError(
            f"the report is of protocol, backbone and datasets {theirs}, this experiment of {mine}", path=path, fix=fix
        )
    return {**data, "source": data.get("carried_from") or str(path)}


def carry(previous: dict, systems, table: dict, trainings: dict, curves: dict, unchanged: list, specs: dict) -> list:
    """Fill in, from `previous` (`read_carried`), the rows of systems that have no run here and whose spec here is
    unknown (not trained in this work dir) or the one that made the earlier row, with their training records,
    reward curves and no-op flags; in place. Returns the (system, dataset) pairs carried."""
    carried = []
    for system in systems:
        before = previous.get("specs", {}).get(system)
        if specs.get(system) is not None and specs[system] != before:
            continue  # trained or configured anew here: the earlier row was made by another model
        for dataset, row in previous["table"].get(system, {}).items():
            if dataset not in table.get(system, {}):
                table.setdefault(system, {})[dataset] = {**row, "carried": True}
                carried.append((system, dataset))
        if specs.get(system) is None and before is not None:
            specs[system] = before
        if system not in trainings and system in previous.get("training", {}):
            trainings[system] = {**previous["training"][system], "carried": True}
            if system in previous.get("unchanged_adapters", []) and system not in unchanged:
                unchanged.append(system)
        if system not in curves and system in previous.get("reward_curves", {}):
            curves[system] = previous["reward_curves"][system]
    return carried


# the claims ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    claim: str
    status: str  # "holds" | "fails" | "pending"
    detail: str


def _value(table: dict, system: str | None, dataset: str) -> float | None:
    return table.get(system, {}).get(dataset, {}).get(KEY) if system else None


def at_least(table: dict, better: str | None, worse: str | None, datasets, claim: str) -> Claim:
    """`better` ≥ `worse` on nDCG@10 on every dataset; it fails by the largest shortfall."""
    if better is None or worse is None:
        return Claim(claim, "pending", "not in this profile")
    missing = [d for d in datasets if _value(table, better, d) is None or _value(table, worse, d) is None]
    if missing:
        return Claim(claim, "pending", f"no {KEY} yet on {', '.join(missing)}")
    gaps = {d: _value(table, better, d) - _value(table, worse, d) for d in datasets}
    shown = "; ".join(f"{d} {gap:+.4f}" for d, gap in gaps.items())
    worst = min(gaps, key=gaps.get)
    if gaps[worst] >= 0:
        return Claim(claim, "holds", f"{better} − {worse}: {shown}")
    return Claim(claim, "fails", f"fails by {-gaps[worst]:.4f} on {worst} ({better} − {worse}: {shown})")


def check_claims(
    table: dict, datasets, *, trained, dear_all: str | None, dear_ce: str | None, prorank: bool = True
) -> list[Claim]:
    """Issue 12's done-when conditions, each "holds", "fails" (by how much) or "pending", on a table of
    {system: {dataset: {"nDCG@10": ...}}}. `trained` lists the trained systems the best is picked from; `dear_all`
    and `dear_ce` name the DeAR ablation systems (None: not run); `prorank` says whether ProRank runs."""
    datasets = list(datasets)
    claims = []
    gain_claim = f"the best trained reranker beats zero-shot pointwise by ≥ {TARGET_GAIN:.2f} {KEY} on {PRIMARY}"
    bm25_claim = "the best trained reranker beats BM25 on every sample"
    scored = [s for s in trained if _value(table, s, PRIMARY) is not None]
    zero = _value(table, "zero-shot", PRIMARY)
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
        best = max(scored, key=lambda s: _value(table, s, PRIMARY))
        gain = _value(table, best, PRIMARY) - zero
        of = f"`{best}`, the best of {len(scored)} trained systems scored on {PRIMARY}"
        of += f" ({len(trained) - len(scored)} still pending)" if len(scored) < len(trained) else ""
        detail = f"{of}: {_value(table, best, PRIMARY):.4f} vs zero-shot {zero:.4f}, gain {gain:+.4f}"
        checks = [v for v, base in INFERENCE_VARIANTS.items() if base == best and _value(table, v, PRIMARY) is not None]
        for variant in checks:  # how much of the best row's score survives its position check
            shown = _value(table, variant, PRIMARY)
            detail += (
                f"; shown its candidates shuffled (`{variant}`) it scores {shown:.4f}, so "
                f"{_value(table, best, PRIMARY) - shown:+.4f} of its score comes from the order it is shown"
            )
        if gain >= TARGET_GAIN:
            claims.append(Claim(gain_claim, "holds", detail))
        else:
            claims.append(Claim(gain_claim, "fails", f"fails by {TARGET_GAIN - gain:.4f}: {detail}"))
        below = at_least(table, best, "bm25", datasets, bm25_claim)
        if below.status == "holds" and any(_value(table, best, d) == _value(table, "bm25", d) for d in datasets):
            below = Claim(bm25_claim, "fails", f"ties BM25 ({below.detail})")  # "beats" is strict
        claims.append(below)
    stages = ("prorank", "prorank-stage1") if prorank else (None, None)
    claims.append(at_least(table, *stages, datasets, "ProRank both stages ≥ stage 1 only"))
    claims.append(at_least(table, dear_all, dear_ce, datasets, "DeAR with all three loss terms ≥ CE only"))
    return claims


def random_order(experiment, shuffles: int = RANDOM_SHUFFLES) -> dict[str, float]:
    """Per dataset: the mean nDCG@10 of `shuffles` seeded random orders of the BM25 candidates (where BM25 is
    scored): the level a reranker that knows nothing reaches."""
    import random

    from routerank.data.trec import read_run
    from routerank.data.types import Ranking, Run
    from routerank.evaluate import evaluate

    out = {}
    for dataset in experiment.config.datasets:
        if not experiment.scored("bm25", dataset):
            continue
        qrels = experiment.test_qrels(dataset)
        bm25, rng, values = read_run(experiment.run_path("bm25", dataset)), random.Random(experiment.config.seed), []
        for _ in range(shuffles):
            shuffled = {}
            for q, ranking in bm25.rankings.items():
                ids = list(ranking.doc_ids[: experiment.config.depth])
                rng.shuffle(ids)
                shuffled[q] = Ranking(tuple(ids), tuple(float(len(ids) - i) for i in range(len(ids))))
            values.append(evaluate(Run(shuffled), qrels, [KEY]).means[KEY])
        out[dataset] = sum(values) / len(values)
    return out


def first_pick(experiment) -> dict[str, dict]:
    """Per dataset (where BM25 and Rank-R1 are scored here): the nDCG@10 of Rank-R1's setwise heapsort driven by a
    judge that always picks the first passage shown (no LLM), and on how many queries Rank-R1's top 10 is exactly
    that judge's. A setwise reranker that always answers "A" scores this, whatever it reads."""
    from routerank.data.trec import read_run
    from routerank.data.types import Ranking, Run
    from routerank.evaluate import evaluate
    from routerank.rerank.setwise import SetwiseReranker
    from routerank.rerank.sorting import setwise_heapsort

    class First:
        def best(self, sets):
            return [0] * len(sets)

    if "rank-r1" not in experiment.systems():
        return {}
    k, top = experiment.methods.rank_r1.k, int(SetwiseReranker.defaults["top"])
    out = {}
    for dataset in experiment.config.datasets:
        if not experiment.scored("bm25", dataset) or not experiment.scored("rank-r1", dataset):
            continue
        qrels = experiment.test_qrels(dataset)
        bm25, model = read_run(experiment.run_path("bm25", dataset)), read_run(experiment.run_path("rank-r1", dataset))
        rankings, same = {}, 0
        for q, ranking in bm25.rankings.items():
            ids = list(ranking.doc_ids[: experiment.config.depth])
            order = setwise_heapsort(len(ids), First(), k=k, top=top)
            rankings[q] = Ranking(tuple(ids[i] for i in order), tuple(float(len(ids) - r) for r in range(len(ids))))
            mine = model.rankings.get(q)
            same += mine is not None and list(mine.doc_ids[:top]) == list(rankings[q].doc_ids[:top])
        value = evaluate(Run(rankings), qrels, [KEY]).means[KEY]
        out[dataset] = {KEY: value, "same_top": same, "queries": len(rankings), "top": top}
    return out


def why(
    table: dict, trainings: dict, curves: dict, random: dict | None = None, first: dict | None = None
) -> dict[str, list[str]]:
    """Evidence beside each claim, from the manifests and the table: what bounds or explains the outcome."""
    notes: dict[str, list[str]] = {"gain": [], "prorank": [], "dear": []}
    teacher, zero = _value(table, "teacher", PRIMARY), _value(table, "zero-shot", PRIMARY)
    if teacher is not None and zero is not None:
        notes["gain"].append(f"the teacher itself is {teacher - zero:+.4f} over zero-shot on {PRIMARY}")
    scored = [s for s in trainings if _value(table, s, PRIMARY) is not None]
    if scored:
        best = max(scored, key=lambda s: _value(table, s, PRIMARY))
        record = trainings[best]
        kept = f", keeping step {record['best_step']} on dev" if record.get("best_step") is not None else ""
        notes["gain"].append(
            f"`{best}` trained {record['steps']} optimizer steps ({record['unit']}) in "
            f"{_seconds(record['seconds'])}{kept}: the whole training budget of the profile"
        )
    for variant, base in INFERENCE_VARIANTS.items():
        shown, ordered = _value(table, variant, PRIMARY), _value(table, base, PRIMARY)
        if shown is not None and ordered is not None:
            notes["gain"].append(
                f"`{base}` scores {ordered:.4f} on {PRIMARY} with its candidates in BM25's order and {shown:.4f} "
                f"with them shuffled (`{variant}`): {ordered - shown:+.4f} of it comes from the order it is shown"
            )
    if random:
        levels = ", ".join(f"{d} {v:.4f}" for d, v in random.items())
        notes["gain"].append(f"a random order of BM25's candidates scores {levels} ({KEY}, {RANDOM_SHUFFLES} shuffles)")
    for dataset, check in (first or {}).items():
        notes["gain"].append(
            f"`rank-r1` scores {_fmt(_value(table, 'rank-r1', dataset))} on {dataset}; its heapsort driven by a judge "
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


# the figure ------------------------------------------------------------------------------------------------------


def reward_figure(curves: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not curves:
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
    with atomic_write(path, "wb") as out:
        fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return path


# the report ------------------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value) -> str:
    return "–" if value is None else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


def _seconds(value) -> str:
    if value is None:
        return "–"
    return f"{value / 3600:.2f} h" if value >= 3600 else f"{value:.0f} s"


def effectiveness_lines(experiment, table: dict, stages) -> list[str]:
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
                cells += [_fmt(row[m])] + [_p(row.get(f"p_vs_{ref}", {}).get(m)) for ref in REFERENCES]
            passes = row.get("calls_per_query", row.get("forward_passes_per_query"))
            cells += [f"{row['seconds_per_query']:.2f}", _fmt(passes, 1), "carried" if row.get("carried") else "done"]
            lines.append(f"| {title(experiment, system)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def pending_note(stages, system: str, dataset: str) -> str:
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
    experiment, stages, report: Path, config_path: Path | None = None, *, carried: dict | None = None
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


def markdown(experiment, data: dict, claims: list[Claim], config_path, figure, report: Path, stages) -> list[str]:
    c, table, trainings = experiment.config, data["table"], data["training"]
    done = sum(s.done for s in stages or [])
    command = "python -m studies.llm_training.experiment --config " + shlex.quote(str(config_path or "<config>"))
    sample = f"{c.test_queries} seeded test queries" if c.test_queries else "every test query"
    lines = [
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
    lines += effectiveness_lines(experiment, table, stages)
    if data.get("carried_rows"):
        systems = sorted({system for system, _ in data["carried_rows"]}, key=experiment.systems().index)
        lines += [
            f"Rows whose status is *carried* ({', '.join(f'`{s}`' for s in systems)}) come from "
            f"`{data['carried_from']}`: an earlier run of this protocol whose runs and adapters are not in this work "
            "dir. Their figures, p-values and training records are as measured then; their p-values are against "
            "that run's BM25 and zero-shot rankings of the same queries.",
            "",
        ]
    lines += [
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
    lines += ["", "## Training time and steps", "", "| system | steps | one step | seconds | with earlier stages |"]
    lines.append("|---|---:|---|---:|---:|")
    for system in experiment.systems():
        record = trainings.get(system)
        if record is not None:
            name = title(experiment, system) + (" (carried)" if record.get("carried") else "")
            lines.append(
                f"| {name} | {record['steps']} | {record['unit']} | {_seconds(record['seconds'])} "
                f"| {_seconds(record['total_seconds'])} |"
            )
    lines += ["", "## GRPO reward curves", ""]
    if figure is not None:
        lines += [f"![reward curves]({figure.relative_to(report.parent)})", ""]
    for system, series in data["reward_curves"].items():
        summary = ", ".join(
            f"{name} {_fmt(s['first'], 3)} → {_fmt(s['last'], 3)}"
            for name, s in ((n, curve_summary(v)) for n, v in series.items())
        )
        steps = len(series["reward"])
        lines.append(f"- `{system}`: {steps} step{'s' if steps != 1 else ''}; first → last tenth: {summary}")
    if not data["reward_curves"]:
        lines.append("No GRPO run has finished yet.")
    for system, record in trainings.items():
        sft = record.get("format_sft")
        if sft:
            lines.append(
                f"- `{system}` first trained a format SFT (a cold start): {sft['records']} records × {sft['epochs']} "
                f"epochs, {sft['steps']} steps in {_seconds(sft['seconds'])}; its loss on the target completions "
                f"went {_fmt(sft['loss']['first'], 3)} → {_fmt(sft['loss']['last'], 3)} (first → last tenth)."
            )
    for system in data["unchanged_adapters"]:
        lines.append(
            f"- `{system}` never changed its adapter: every completion in every group got the same reward, so every "
            "advantage was 0 and so was every gradient; its LoRA B weights are still all zero, and its rows score "
            "the untrained backbone."
        )
    lines += ["", "## DeAR loss ablation (stage 1)", ""]
    lines += ablation_lines(experiment, data)
    lines += ["", "## Systems", "", f"Reranker specs (`<work>` = `{data['work_dir']}`):", ""]
    lines += ["| system | spec |", "|---|---|"]
    for system, spec in data["specs"].items():
        shown = "not trained yet" if spec is None else f"`{spec.replace(data['work_dir'], '<work>')}`"
        lines.append(f"| {system} | {shown} |")
    return lines


def ablation_lines(experiment, data: dict) -> list[str]:
    c, table, ablations = experiment.config, data["table"], data["dear_ablations"]
    if not ablations:
        return ["DeAR is not in this profile."]
    ce = ablations.get("ce")
    lines = [
        "| loss terms | system | " + " | ".join(c.datasets) + " | Δ vs CE only (mean) | steps | seconds |",
        "|---|---|" + "---:|" * len(c.datasets) + "---:|---:|---:|",
    ]
    for terms, system in ablations.items():
        values = [_value(table, system, d) for d in c.datasets]
        base = [_value(table, ce, d) for d in c.datasets] if ce else []
        delta = "–"
        if base and None not in values and None not in base:
            delta = f"{sum(values) / len(values) - sum(base) / len(base):+.4f}"
        record = data["training"].get(system, {})
        lines.append(
            f"| {terms_title(terms)} | `{system}` | "
            + " | ".join(_fmt(v) for v in values)
            + f" | {delta} | {record.get('steps', '–')} | {_seconds(record.get('seconds'))} |"
        )
    return lines
