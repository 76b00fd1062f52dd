"""reports/r2r.md (+ r2r.json and figures) from whatever stages of the R2R experiment exist."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path

from routerank.errors import SpecError
from routerank.fsutil import atomic_write

KEY = "nDCG@10"

MEASURES = "nDCG@5 nDCG@10 MRR@10 R@100"
INTERPOLATED = "~dev"  # a system's run mixed with the first stage's scores, its alpha chosen on dev
FIRST = "first"  # the candidates' run when the first stage is not BM25 (then "bm25" is plain BM25 beside it)
SYSTEMS = {  # run name -> (letter, title)
    "bm25": ("", "BM25"),
    FIRST: ("", "first stage (candidates)"),
    "generalist": ("a", "generalist backbone, zero-shot"),
    "pooled": ("b", "one LoRA, all domains pooled"),
    "plain": ("c", "per-domain experts, no EAG (oracle)"),
    "r2r": ("d", "R2R: EAG experts + latent router"),
    "oracle": ("e", "R2R, oracle routing"),
    "ce": ("f", "cross-encoder (MiniLM, trained)"),
}


def system_title(system: str) -> tuple[str, str]:
    """(letter, title) of a table row: a system of SYSTEMS, or one of them interpolated with the first stage."""
    base = system.removesuffix(INTERPOLATED)
    letter, title = SYSTEMS[base]
    if base == system:
        return letter, title
    return (f"{letter}~" if letter else ""), f"{title}, interpolated with the first stage (α on dev)"


def ordered_systems(table: dict) -> list[str]:
    """The table's systems in SYSTEMS order, each followed by its interpolated row where there is one."""
    return [v for s in SYSTEMS for v in (s, f"{s}{INTERPOLATED}") if v in table]


def _fmt(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _section(title: str, blurb: str, first: str, columns: list[str]) -> list[str]:
    """A report section's heading, one line of explanation and the head of its numeric table."""
    head = f"| {first} | " + " | ".join(columns) + " |"
    return [f"## {title}", "", blurb, "", head, "|---|" + "---:|" * len(columns)]


def _p(value) -> str:
    return "–" if value is None else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


def collect(experiment) -> dict:
    """Evaluate every run on disk; systems c, e and f are stitched per domain from their own runs."""
    from routerank.data.trec import read_run
    from routerank.evaluate import evaluate, paired_test
    from routerank.rerank.interpolate import interpolate_runs

    c = experiment.config
    names = list(c.domains)
    evals: dict[str, dict[str, object]] = {}  # system -> dataset -> Evaluation
    meta: dict[str, dict[str, dict]] = {}
    used: dict[str, dict[str, dict]] = {}  # system -> dataset -> the interpolation weight its ~ row used

    qrels = {
        d: experiment.dataset(d).split_qrels("test").subset(q.id for q in experiment.test_queries(d)) for d in names
    }

    first = functools.cache(experiment.candidates)  # each dataset's candidates, read once for every system

    def load(system: str, dataset: str, run_name: str | None = None):
        path = experiment.run_path(run_name or system, dataset)
        if not path.exists():
            return
        run = read_run(path)
        evals.setdefault(system, {})[dataset] = evaluate(run, qrels[dataset], MEASURES)
        weight = experiment.alpha_for(system, dataset) if system in SYSTEMS else None  # ce: the generalist's
        if weight:  # the same run mixed with the first stage, alpha from dev
            mixed = interpolate_runs(run, first(dataset), c.depth, weight["alpha"])
            evals.setdefault(f"{system}{INTERPOLATED}", {})[dataset] = evaluate(mixed, qrels[dataset], MEASURES)
            used.setdefault(system, {})[dataset] = weight
        side = path.with_suffix(".json")
        if side.exists():
            meta.setdefault(system, {})[dataset] = json.loads(side.read_text())

    own = "bm25" if c.first_stage == "bm25" else FIRST
    for dataset in names:
        if (experiment.work / "candidates" / f"{dataset}.trec").exists():
            evals.setdefault(own, {})[dataset] = evaluate(first(dataset), qrels[dataset], MEASURES)
            if own != "bm25":
                evals.setdefault("bm25", {})[dataset] = evaluate(experiment.bm25_run(dataset), qrels[dataset], MEASURES)
        load("generalist", dataset)
        load("pooled", dataset)
        load("plain", dataset, f"plain-{dataset}")
        load("r2r", dataset)
        load("oracle", dataset, f"eag-{dataset}")
        load("ce", dataset)
        for expert in names:
            load(f"eag-{expert}", dataset)
        for adapter in experiment.expert_configs():
            if adapter.startswith("eag_") and adapter.endswith(f"-{dataset}"):
                load(adapter.split("-", 1)[0], dataset, adapter)

    table = {}
    for system, per in evals.items():
        rows = {d: {**e.means, "queries": e.num_queries} for d, e in per.items()}
        for ref in ("bm25", FIRST, "generalist", "pooled"):
            for d, e in per.items():
                if system != ref and ref in evals and d in evals[ref]:
                    test = paired_test(evals[ref][d].per_query[KEY], e.per_query[KEY])
                    rows[d][f"p_vs_{ref}"] = {
                        "t": test.t_pvalue,
                        "randomization": test.randomization_pvalue,
                        "delta": test.delta,
                    }
        if all(d in per for d in names):
            rows["average"] = {m: sum(per[d].means[m] for d in names) / len(names) for m in per[names[0]].means}
        table[system] = rows
    return {"table": table, "meta": meta, "alpha_used": used}


def training_times(experiment) -> dict:
    from routerank.r2r.trainer import MANIFEST

    out = {}
    for adapter in experiment.expert_configs():
        path = experiment.expert_dir(adapter) / MANIFEST
        if path.exists():
            manifest = json.loads(path.read_text())
            m = manifest["metrics"]
            out[adapter] = {
                "seconds": m.get("train_seconds"),
                "groups": m.get("examples"),
                "steps": m.get("steps"),
                "stages": m.get("stages"),
                "device": m.get("device"),
                "dev_loss": m.get("dev_loss"),
                "data": manifest.get("training_data"),
            }
    return out


def figures(data: dict, names: list[str], labels: dict[str, str], folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    table = data["table"]
    systems = ordered_systems(table)
    if systems:
        fig, ax = plt.subplots(figsize=(1.6 + 1.7 * len(names), 3.6))
        width = 0.8 / len(systems)
        for i, system in enumerate(systems):
            values = [table[system].get(d, {}).get(KEY, np.nan) for d in names]
            letter, title = system_title(system)
            ax.bar(np.arange(len(names)) + i * width, values, width, label=f"({letter}) {title}" if letter else title)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, [f"{d}\n({labels[d]})" for d in names])
        ax.set_ylabel(KEY)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        made.append(_save(fig, folder / "ndcg10.png"))
    matrix = data.get("forgetting")
    if matrix and any(v is not None for row in matrix["values"] for v in row):
        made.append(
            _heatmap(
                matrix["values"],
                matrix["rows"],
                matrix["columns"],
                "evaluated on",
                "expert",
                f"{KEY}: every EAG expert on every domain",
                folder / "forgetting.png",
            )
        )
    confusion = data.get("routing", {}).get("routers", {}).get("latent-linear (backbone h_q)", {}).get("confusion")
    if confusion:
        made.append(
            _heatmap(
                confusion["counts"],
                confusion["rows"],
                confusion["columns"],
                "predicted",
                "true domain",
                "latent router confusion (test queries)",
                folder / "routing-confusion.png",
                fmt="d",
            )
        )
    return made


def _heatmap(values, rows, columns, xlabel, ylabel, title, path: Path, fmt: str = ".3f") -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(columns), 1.0 + 0.6 * len(rows)))
    ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not np.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    format(int(grid[i, j]) if fmt == "d" else grid[i, j], fmt),
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=8,
                )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_write(path, "wb") as out:
        fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report(experiment, stages, report: Path, config_path: Path | None = None) -> Path:

    c = experiment.config
    names = list(c.domains)
    data = collect(experiment)
    table = data["table"]
    routing_path = experiment.work / "router" / "routing.json"
    if routing_path.exists():
        routing = json.loads(routing_path.read_text())
        routing.pop("decisions", None)
        data["routing"] = routing
    data["training"] = training_times(experiment)
    if experiment.alpha_path().exists():
        data["alpha"] = json.loads(experiment.alpha_path().read_text())
    forgetting = {
        "rows": [f"eag-{n}" for n in names] + ["generalist"],
        "columns": names,
        "values": [[table.get(f"eag-{e}", {}).get(d, {}).get(KEY) for d in names] for e in names]
        + [[table.get("generalist", {}).get(d, {}).get(KEY) for d in names]],
    }
    data["forgetting"] = forgetting
    data["stages"] = [vars(s) for s in stages]
    data["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(c).items()}
    made = figures(data, names, c.domains, report.with_suffix(""))

    lines = [f"# R2R: Route-to-Rerank on {len(names)} domains ({c.profile} profile)", ""]
    done = sum(s.done for s in stages)
    lines += [
        f"Produced by the **{c.profile}** profile. {done} of {len(stages)} stages are done"
        + ("." if done == len(stages) else "; pending stages are listed at the end and their cells show –."),
        "",
        "Reproduce (each command resumes from the cached stages):",
        "",
        "```",
    ]
    command = "routerank experiment r2r --config " + (str(config_path) if config_path else "<config>")
    lines += [command, "```", ""]
    from routerank.rerank.backbones import ENCODER_TARGETS, LLM_TARGETS, is_encoder

    targets = "/".join(ENCODER_TARGETS if is_encoder(c.backbone) else LLM_TARGETS)
    lines += [
        f"Backbone `{c.backbone}`; LoRA r=32, alpha=64 on {targets}; objective {c.objective} "
        f"(over 1 positive + {c.negatives} `{c.miner}` negatives"
        + (f" below its first {c.negative_skip} non-relevant documents" if c.negative_skip else "")
        + f"; lr {c.lr:g}; the kept checkpoint is the best on dev by 1 − MRR, step 0 = the generalist); "
        f"≤ {c.train_queries or 'all'} "
        f"training queries per domain, ≤ {c.max_doc_tokens} doc tokens, {c.epochs} epoch(s) per stage. "
        f"Evaluation: {c.test_queries or 'all'} seeded test queries per domain (seed {c.seed}), `{c.first_stage}` "
        f"top {c.depth} reranked, its order kept below to {c.candidates}. Test queries never enter training "
        "(experts train on the train split; dev comes from the dev split or held-out train queries).",
        "",
    ]
    if c.interpolate:
        lines += [
            "Rows marked ~ mix the system's scores with the first stage's (each min-max normalised per query, "
            "s = α·rerank + (1−α)·first stage). Each system chooses its own α per domain on dev queries that "
            "neither the backbone nor that system's adapters trained on (the dev split, or the backbone's held-out "
            "train queries); test queries never choose. A weight marked * is the generalist's, used where the "
            "system's own is not chosen yet (and always for (f)).",
            "",
            "| system | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for system, per in data.get("alpha_used", {}).items():
            letter = SYSTEMS[system][0]
            cells = ["–" if d not in per else f"{per[d]['alpha']:.2f}" + ("" if per[d]["own"] else "*") for d in names]
            lines.append(f"| {'(' + letter + ') ' if letter else ''}{system} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Domains: " + ", ".join(f"`{d}` ({label})" for d, label in c.domains.items()), ""]

    systems = ordered_systems(table)
    for measure in ("nDCG@10", "nDCG@5", "MRR@10", "R@100"):
        lines += [
            f"## {measure}",
            "",
            "| system | " + " | ".join(names) + " | average |",
            "|---|" + "---:|" * (len(names) + 1),
        ]
        for system in systems:
            letter, title = system_title(system)
            cells = [_fmt(table[system].get(d, {}).get(measure)) for d in [*names, "average"]]
            lines.append(f"| {'(' + letter + ') ' if letter else ''}{title} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Paired significance on nDCG@10 (two-sided t-test / randomisation test p; Δ = row − reference):",
        "",
        "| system | reference | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for system in [s for s in systems if s not in ("bm25", FIRST)]:
        for ref in ("bm25", FIRST, "generalist", "pooled"):
            cells = []
            for d in names:
                test = table[system].get(d, {}).get(f"p_vs_{ref}")
                cells.append(
                    "–" if not test else f"Δ {test['delta']:+.4f}, p {_p(test['t'])} / {_p(test['randomization'])}"
                )
            if any(cell != "–" for cell in cells):
                letter, ref_letter = system_title(system)[0], SYSTEMS[ref][0]
                lines.append(
                    f"| ({letter}) {system} | {'(' + ref_letter + ') ' if ref_letter else ''}{ref} | "
                    + " | ".join(cells)
                    + " |"
                )
    lines.append("")
    lines += ["## The claims", ""] + claims(table, names) + [""]

    if "routing" in data:
        r = data["routing"]
        lines += [
            "## Routing",
            "",
            f"Routers train on {r['train_queries']} train-split queries and are scored on all "
            f"{r['test_queries']} test queries of the {len(names)} domains.",
            "",
            "| router | accuracy | macro-F1 |",
            "|---|---:|---:|",
        ]
        for title, row in r["routers"].items():
            lines.append(f"| {title} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} |")
        conf = r["routers"].get("latent-linear (backbone h_q)", {}).get("confusion")
        if conf:
            lines += [
                "",
                "Confusion of the latent router (rows: true domain):",
                "",
                "| | " + " | ".join(conf["columns"]) + " |",
                "|---|" + "---:|" * len(conf["columns"]),
            ]
            lines += [
                f"| {row} | " + " | ".join(str(v) for v in counts) + " |"
                for row, counts in zip(conf["rows"], conf["counts"], strict=True)
            ]
        rerank = [m for m in data["meta"].get("oracle", {}).values() if m.get("seconds")]
        if rerank:
            per_query = sum(m["seconds"] for m in rerank) / max(1, sum(m["pairs"] for m in rerank)) * c.depth
            lines += [
                "",
                f"Routing overhead: {r['route_seconds_per_query'] * 1000:.1f} ms per query (one backbone "
                f"forward over the query alone) against {per_query:.2f} s to rerank its top {c.depth}: "
                f"{r['route_seconds_per_query'] / per_query:.2%} of rerank time.",
            ]
        lines.append("")

    if not c.forgetting:
        lines += [
            "## Forgetting matrix",
            "",
            "Not run in this profile (`forgetting = false`): only each expert's own domain is scored here. The "
            "quick profile's report has the matrix and the cost of misrouting.",
            "",
        ]
    else:
        lines += _section(
            "Forgetting matrix",
            f"{KEY} of every EAG expert (rows) on every domain's test queries (columns); the diagonal is (e).",
            "expert",
            names,
        )
        lines += [
            f"| {row} | " + " | ".join(_fmt(v) for v in values) + " |"
            for row, values in zip(forgetting["rows"], forgetting["values"], strict=True)
        ]
        lines += [
            "",
            "## The cost of misrouting",
            "",
            f"{KEY} change when a domain's queries go to a wrong expert instead of their own:",
            "",
            "| domain | own expert | " + " | ".join(f"→ eag-{n}" for n in names) + " |",
            "|---|---:|" + "---:|" * len(names),
        ]
        for j, d in enumerate(names):
            own = forgetting["values"][j][j]
            cells = []
            for i, _ in enumerate(names):
                v = forgetting["values"][i][j]
                cells.append("(own)" if i == j else ("–" if v is None or own is None else f"{v - own:+.4f}"))
            lines.append(f"| {d} | {_fmt(own)} | " + " | ".join(cells) + " |")
        lines.append("")

    ablation_rows = []
    for d in names:
        cells = {
            "none": table.get("plain", {}).get(d, {}).get(KEY),
            "ner+patterns": table.get("oracle", {}).get(d, {}).get(KEY),
        }
        for g in c.ablation:
            cells[g] = table.get(f"eag_{g.replace('+', '_')}", {}).get(d, {}).get(KEY)
        if d in (c.ablation_domains or names):
            ablation_rows.append((d, cells))
    grans = ["none", *c.ablation, "ner+patterns"]
    lines += _section(
        "EAG masking granularity", f"{KEY} with oracle routing; 'none' is (c), 'ner+patterns' is (e).", "domain", grans
    )
    lines += [f"| {d} | " + " | ".join(_fmt(cells.get(g)) for g in grans) + " |" for d, cells in ablation_rows]
    lines.append("")

    if data["training"]:
        lines += [
            "## Training",
            "",
            "| adapter | groups | optimizer steps | stages | seconds | device | dev loss |",
            "|---|---:|---:|---:|---:|---|---:|",
        ]
        for adapter, t in data["training"].items():
            lines.append(
                f"| {adapter} | {t['groups']} | {t['steps']} | {t['stages']} | {_fmt(t['seconds'], 0)} | "
                f"{t['device']} | {_fmt(t['dev_loss'])} |"
            )
        lines.append("")
    scoring = [(s, d, m) for s, per in data["meta"].items() for d, m in per.items() if m.get("pairs")]
    if scoring:
        total_pairs = sum(m["pairs"] for _, _, m in scoring)
        total_s = sum(m["seconds"] for _, _, m in scoring)
        lines += [
            f"Scoring: {total_pairs:,} (query, doc) pairs computed in {total_s:,.0f} s of fresh scoring "
            "(cached pairs cost nothing and are not counted)."
        ]
        lines.append("")
    if made:
        lines += ["## Figures", ""] + [f"![{p.stem}]({report.with_suffix('').name}/{p.name})" for p in made] + [""]
    lines += ["## Stages", "", "| stage | status | seconds (this sitting) |", "|---|---|---:|"]
    lines += [
        f"| {s.name} | {'done' if s.done else 'pending'}{' (' + s.note + ')' if s.note else ''} | "
        f"{_fmt(s.seconds, 0)} |"
        for s in stages
    ]
    lines += [
        "",
        "## Config",
        "",
        "```json",
        json.dumps(data["config"], indent=2),
        "```",
        "",
        f"Work dir (adapters, runs, router; not in git): `{experiment.work}`. The R2R bank it builds reranks "
        f"in any pipeline as `bm25>>r2r:{experiment.work / 'bank'}@{c.depth}`.",
        "",
        "Invoked as: `" + " ".join(shlex.quote(a) for a in ["routerank", *sys.argv[1:]]) + "`",
        "",
    ]
    report.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(report) as out:
        out.write("\n".join(lines))
    with atomic_write(report.with_suffix(".json")) as out:
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
    return report


def claims(table: dict, names: list[str]) -> list[str]:
    out = []
    d, a, b = table.get("r2r", {}), table.get("generalist", {}), table.get("pooled", {})
    if all(n in d and n in a for n in names):
        wins = [n for n in names if d[n][KEY] > a[n][KEY]]
        deltas = ", ".join(f"{n} {d[n][KEY] - a[n][KEY]:+.4f}" for n in names)
        verdict = "holds" if len(wins) == len(names) else f"fails in {len(names) - len(wins)} domain(s)"
        out.append(f"- R2R (d) beats the generalist (a) on {KEY} in every domain: **{verdict}** ({deltas}).")
    else:
        out.append("- R2R (d) vs generalist (a): pending stages.")
    if "average" in d and "average" in a:
        delta = d["average"][KEY] - a["average"][KEY]
        out.append(
            f"- R2R (d) beats the generalist (a) on average {KEY}: **{'holds' if delta > 0 else 'fails'}** "
            f"(Δ {delta:+.4f})."
        )
    di, ai = table.get(f"r2r{INTERPOLATED}", {}), table.get(f"generalist{INTERPOLATED}", {})
    if "average" in di and "average" in ai:
        delta = di["average"][KEY] - ai["average"][KEY]
        out.append(
            f"- R2R interpolated (d~) beats the generalist interpolated (a~) on average {KEY}: "
            f"**{'holds' if delta > 0 else 'fails'}** (Δ {delta:+.4f})."
        )
    for ref, ref_title in ((FIRST, "the first stage"), ("bm25", "BM25")):
        first = table.get(ref, {})
        for system in ("r2r", f"r2r{INTERPOLATED}"):
            rows = table.get(system, {})
            if all(n in rows and n in first for n in names):
                wins = [n for n in names if rows[n][KEY] > first[n][KEY]]
                deltas = ", ".join(
                    f"{n} {rows[n][KEY] - first[n][KEY]:+.4f} (p {_p(rows[n].get(f'p_vs_{ref}', {}).get('t'))})"
                    for n in names
                )
                verdict = "holds" if len(wins) == len(names) else f"fails in {len(names) - len(wins)} domain(s)"
                label = "R2R (d)" if system == "r2r" else "R2R interpolated (d~)"
                out.append(f"- {label} beats {ref_title} in every domain: **{verdict}** ({deltas}).")
    if "average" in d and "average" in b:
        delta = d["average"][KEY] - b["average"][KEY]
        out.append(
            f"- R2R (d) beats pooled fine-tuning (b) on average {KEY}: **{'holds' if delta > 0 else 'fails'}** "
            f"(Δ {delta:+.4f})."
        )
    else:
        out.append("- R2R (d) vs pooled (b): pending stages.")
    return out


def main_from_cli(
    config_path: Path,
    work_dir: Path | None,
    report: Path,
    max_minutes: float | None,
    only: str | None,
    progress: bool = True,
    ray: str | None = None,
) -> Path:
    from studies.r2r.experiment import R2RConfig, R2RExperiment

    config = R2RConfig.load(config_path)
    experiment = R2RExperiment(config, work_dir, progress=progress, ray=ray)
    kinds = set(only.split(",")) if only else None
    if kinds and not kinds <= {"train", "route", "score"}:
        raise SpecError(f"--only {only!r}", fix="a comma list of train, route, score")
    stages = experiment.run(max_minutes, kinds)
    return write_report(experiment, stages, report, config_path)
