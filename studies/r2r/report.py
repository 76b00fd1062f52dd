"""reports/r2r.md (+ r2r.json and figures) from whatever stages of the R2R experiment exist."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from routerank.fsutil import atomic_write
from routerank.rerank.backbones import ENCODER_TARGETS, LLM_TARGETS, is_encoder
from routerank.stages import Stage
from studies.r2r.collect import gather
from studies.r2r.config import R2RConfig
from studies.r2r.figures import LATENT, figures
from studies.r2r.systems import FIRST, INTERPOLATED, KEY, REFERENCES, SYSTEMS, ordered_systems, system_title
from studies.report_format import format_p, format_value

if TYPE_CHECKING:
    from studies.r2r.experiment import R2RExperiment

COMMAND = "python -m studies.r2r"


def _section(title: str, blurb: str, first: str, columns: list[str]) -> list[str]:
    """A report section's heading, one line of explanation and the head of its numeric table."""
    head = f"| {first} | " + " | ".join(columns) + " |"
    return [f"## {title}", "", blurb, "", head, "|---|" + "---:|" * len(columns)]


def _labelled(letter: str) -> str:
    return "(" + letter + ") " if letter else ""


def intro_lines(c: R2RConfig, stages: list[Stage], config_path: Path | None) -> list[str]:
    """The title, how many stages are done, the command that reproduces it, and the protocol."""
    names = list(c.domains)
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
    command = f"{COMMAND} --config " + (str(config_path) if config_path else "<config>")
    lines += [command, "```", ""]
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
    return lines


def alpha_lines(data: dict, names: list[str]) -> list[str]:
    """How the ~ rows interpolate, and the weight each system used per domain (* where it is the generalist's)."""
    lines = [
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
        lines.append(f"| {_labelled(letter)}{system} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def measure_lines(table: dict, names: list[str]) -> list[str]:
    """One table per measure: every system on every domain and on average."""
    lines = []
    for measure in ("nDCG@10", "nDCG@5", "MRR@10", "R@100"):
        lines += [
            f"## {measure}",
            "",
            "| system | " + " | ".join(names) + " | average |",
            "|---|" + "---:|" * (len(names) + 1),
        ]
        for system in ordered_systems(table):
            letter, title = system_title(system)
            cells = [format_value(table[system].get(d, {}).get(measure)) for d in [*names, "average"]]
            lines.append(f"| {_labelled(letter)}{title} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def significance_lines(table: dict, names: list[str]) -> list[str]:
    """Every system's paired tests against each reference it was tested against."""
    lines = [
        "Paired significance on nDCG@10 (two-sided t-test / randomisation test p; Δ = row − reference):",
        "",
        "| system | reference | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for system in [s for s in ordered_systems(table) if s not in ("bm25", FIRST)]:
        for ref in REFERENCES:
            cells = []
            for d in names:
                test = table[system].get(d, {}).get(f"p_vs_{ref}")
                cells.append(
                    "–"
                    if not test
                    else f"Δ {test['delta']:+.4f}, p {format_p(test['t'])} / {format_p(test['randomization'])}"
                )
            if any(cell != "–" for cell in cells):
                letter, ref_letter = system_title(system)[0], SYSTEMS[ref][0]
                lines.append(f"| ({letter}) {system} | {_labelled(ref_letter)}{ref} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def routing_lines(data: dict, c: R2RConfig) -> list[str]:
    """Router accuracy, the latent router's confusion, and the cost of routing beside reranking."""
    r, names = data["routing"], list(c.domains)
    lines = [
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
    conf = r["routers"].get(LATENT, {}).get("confusion")
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
    return lines


def forgetting_lines(c: R2RConfig, forgetting: dict) -> list[str]:
    """The forgetting matrix and the cost of misrouting (or why this profile has neither)."""
    names = list(c.domains)
    if not c.forgetting:
        return [
            "## Forgetting matrix",
            "",
            "Not run in this profile (`forgetting = false`): only each expert's own domain is scored here. The "
            "quick profile's report has the matrix and the cost of misrouting.",
            "",
        ]
    lines = _section(
        "Forgetting matrix",
        f"{KEY} of every EAG expert (rows) on every domain's test queries (columns); the diagonal is (e).",
        "expert",
        names,
    )
    lines += [
        f"| {row} | " + " | ".join(format_value(v) for v in values) + " |"
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
        lines.append(f"| {d} | {format_value(own)} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def ablation_lines(c: R2RConfig, table: dict) -> list[str]:
    """nDCG@10 per EAG masking granularity, with oracle routing."""
    names, rows = list(c.domains), []
    for d in names:
        cells = {
            "none": table.get("plain", {}).get(d, {}).get(KEY),
            "ner+patterns": table.get("oracle", {}).get(d, {}).get(KEY),
        }
        for g in c.ablation:
            cells[g] = table.get(f"eag_{g.replace('+', '_')}", {}).get(d, {}).get(KEY)
        if d in (c.ablation_domains or names):
            rows.append((d, cells))
    grans = ["none", *c.ablation, "ner+patterns"]
    lines = _section(
        "EAG masking granularity", f"{KEY} with oracle routing; 'none' is (c), 'ner+patterns' is (e).", "domain", grans
    )
    lines += [f"| {d} | " + " | ".join(format_value(cells.get(g)) for g in grans) + " |" for d, cells in rows]
    lines.append("")
    return lines


def cost_lines(data: dict) -> list[str]:
    """Training time per adapter, and the pairs scored afresh."""
    lines = []
    if data["training"]:
        lines += [
            "## Training",
            "",
            "| adapter | groups | optimizer steps | stages | seconds | device | dev loss |",
            "|---|---:|---:|---:|---:|---|---:|",
        ]
        for adapter, t in data["training"].items():
            lines.append(
                f"| {adapter} | {t['groups']} | {t['steps']} | {t['stages']} | {format_value(t['seconds'], 0)} | "
                f"{t['device']} | {format_value(t['dev_loss'])} |"
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
    return lines


def closing_lines(
    experiment: R2RExperiment, data: dict, stages: list[Stage], made: list[Path], report: Path
) -> list[str]:
    """The figures, every stage's status, the config, the work dir and the command line that wrote it."""
    c, lines = experiment.config, []
    if made:
        lines += ["## Figures", ""] + [f"![{p.stem}]({report.with_suffix('').name}/{p.name})" for p in made] + [""]
    lines += ["## Stages", "", "| stage | status | seconds (this sitting) |", "|---|---|---:|"]
    lines += [
        f"| {s.name} | {'done' if s.done else 'pending'}{' (' + s.note + ')' if s.note else ''} | "
        f"{format_value(s.seconds, 0)} |"
        for s in stages
    ]
    return lines + [
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
        "Invoked as: `" + " ".join(shlex.quote(a) for a in [*COMMAND.split(), *sys.argv[1:]]) + "`",
        "",
    ]


def markdown(
    experiment: R2RExperiment, data: dict, stages: list[Stage], report: Path, config_path: Path | None, made: list
) -> list[str]:
    """The report's lines, section by section."""
    c = experiment.config
    names, table = list(c.domains), data["table"]
    lines = intro_lines(c, stages, config_path)
    if c.interpolate:
        lines += alpha_lines(data, names)
    lines += ["Domains: " + ", ".join(f"`{d}` ({label})" for d, label in c.domains.items()), ""]
    lines += measure_lines(table, names) + significance_lines(table, names)
    lines += ["## The claims", ""] + claims(table, names) + [""]
    if "routing" in data:
        lines += routing_lines(data, c)
    lines += forgetting_lines(c, data["forgetting"]) + ablation_lines(c, table) + cost_lines(data)
    return lines + closing_lines(experiment, data, stages, made, report)


def write_report(experiment: R2RExperiment, stages: list[Stage], report: Path, config_path: Path | None = None) -> Path:
    """Write the markdown report, its JSON beside it and its figures in a folder beside it; returns its path."""
    c = experiment.config
    data = gather(experiment, stages)
    made = figures(data, list(c.domains), c.domains, report.with_suffix(""))
    lines = markdown(experiment, data, stages, report, config_path, made)
    report.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(report) as out:
        out.write("\n".join(lines))
    with atomic_write(report.with_suffix(".json")) as out:
        json.dump(data, out, indent=2, default=str)
        out.write("\n")
    return report


def _beats(delta: float) -> str:
    return "holds" if delta > 0 else "fails"


def _everywhere(wins: list[str], names: list[str]) -> str:
    return "holds" if len(wins) == len(names) else f"fails in {len(names) - len(wins)} domain(s)"


def _first_stage_claims(table: dict, names: list[str]) -> list[str]:
    """R2R (plain and interpolated) against the first stage and against BM25, in every domain."""
    out = []
    for ref, ref_title in ((FIRST, "the first stage"), ("bm25", "BM25")):
        first = table.get(ref, {})
        for system in ("r2r", f"r2r{INTERPOLATED}"):
            rows = table.get(system, {})
            if all(n in rows and n in first for n in names):
                wins = [n for n in names if rows[n][KEY] > first[n][KEY]]
                deltas = ", ".join(
                    f"{n} {rows[n][KEY] - first[n][KEY]:+.4f} (p {format_p(rows[n].get(f'p_vs_{ref}', {}).get('t'))})"
                    for n in names
                )
                label = "R2R (d)" if system == "r2r" else "R2R interpolated (d~)"
                out.append(f"- {label} beats {ref_title} in every domain: **{_everywhere(wins, names)}** ({deltas}).")
    return out


def claims(table: dict, names: list[str]) -> list[str]:
    """The R2R issue's claims, each "holds" or "fails" on the table as it stands (or pending)."""
    out: list[str] = []
    d, a, b = table.get("r2r", {}), table.get("generalist", {}), table.get("pooled", {})
    if all(n in d and n in a for n in names):
        wins = [n for n in names if d[n][KEY] > a[n][KEY]]
        deltas = ", ".join(f"{n} {d[n][KEY] - a[n][KEY]:+.4f}" for n in names)
        out.append(
            f"- R2R (d) beats the generalist (a) on {KEY} in every domain: **{_everywhere(wins, names)}** ({deltas})."
        )
    else:
        out.append("- R2R (d) vs generalist (a): pending stages.")
    if "average" in d and "average" in a:
        delta = d["average"][KEY] - a["average"][KEY]
        out.append(f"- R2R (d) beats the generalist (a) on average {KEY}: **{_beats(delta)}** (Δ {delta:+.4f}).")
    di, ai = table.get(f"r2r{INTERPOLATED}", {}), table.get(f"generalist{INTERPOLATED}", {})
    if "average" in di and "average" in ai:
        delta = di["average"][KEY] - ai["average"][KEY]
        out.append(
            f"- R2R interpolated (d~) beats the generalist interpolated (a~) on average {KEY}: "
            f"**{_beats(delta)}** (Δ {delta:+.4f})."
        )
    out += _first_stage_claims(table, names)
    if "average" in d and "average" in b:
        delta = d["average"][KEY] - b["average"][KEY]
        out.append(f"- R2R (d) beats pooled fine-tuning (b) on average {KEY}: **{_beats(delta)}** (Δ {delta:+.4f}).")
    else:
        out.append("- R2R (d) vs pooled (b): pending stages.")
    return out
