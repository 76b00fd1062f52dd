"""The report stage of the R3AG experiment: reports/r3ag.json (every figure) and reports/r3ag.md (tables, a chart).

The markdown is generated from the results alone, so it states what was measured; the prose a reader needs
beyond the tables (where R3AG fails, and by how much) is computed from the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

from studies.r3ag.evaluation import baseline_averages
from studies.report_format import pyplot

if TYPE_CHECKING:
    from studies.r3ag.experiment import R3AGExperiment

BASELINE_ORDER = ("oracle", "oracle-fixed", "always-retrieve", "never-retrieve", "random", "centroid", "classifier")


def _order(systems: dict) -> list[str]:
    learned = [n for n in systems if n.startswith("r3ag")]
    fixed = sorted(n for n in systems if n.startswith("fixed:"))
    rest = [n for n in BASELINE_ORDER if n in systems] + [n for n in systems if n == "necessity"]
    return learned + rest + fixed


def _system_table(result: dict) -> list[str]:
    lines = [
        "| system | F1 | EM | nDCG@10 | retrieval rate | oracle agreement | routes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in _order(result["systems"]):
        s = result["systems"][name]
        routes = ", ".join(f"{k} {v}" for k, v in sorted(s["routes"].items()))
        lines.append(
            f"| {name} | {s['f1']:.3f} | {s['em']:.3f} | {s['ndcg10']:.3f} | {s['retrieval_rate']:.2f} "
            f"| {s['oracle_agreement']:.2f} | {routes} |"
        )
    return lines


def headline(results: dict) -> list[dict]:
    """One row per set: R3AG against the oracles and the best non-oracle baseline, with the paired test's p."""
    rows = []
    for dataset, result in results["sets"].items():
        systems = result["systems"]
        best = result["best_baseline"]
        rows.append(
            {
                "dataset": dataset,
                "queries": result["queries"],
                "r3ag_f1": systems["r3ag"]["f1"],
                "r3ag_em": systems["r3ag"]["em"],
                "oracle_fixed_f1": systems["oracle-fixed"]["f1"],
                "oracle_f1": systems["oracle"]["f1"],
                "best_baseline": best,
                "best_baseline_f1": systems[best]["f1"],
                "delta_vs_best": systems["r3ag"]["f1"] - systems[best]["f1"],
                "p_randomization": result["significance"]["randomization_pvalue"],
                "p_t": result["significance"]["t_pvalue"],
            }
        )
    return rows


def _figure(results: dict, folder: Path) -> Path | None:
    """F1 by system and set, as a bar chart (None without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return None
    sets = list(results["sets"])
    names = ["r3ag", "oracle", "oracle-fixed", "always-retrieve", "never-retrieve", "classifier", "necessity"]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [results["sets"][s]["systems"].get(name, {}).get("f1", 0.0) for s in sets]
        ax.bar([j + i * width for j in range(len(sets))], values, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sets))], sets)
    ax.set_ylabel("answer F1 (test labels)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "f1-by-system.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label_lines(results: dict) -> list[str]:
    members = list(results["config_pool"])
    lines = ["| set | label | " + " | ".join(members) + " | queries where every member ties on F1 |"]
    lines.append("|---|---|" + "---:|" * (len(members) + 1))
    for s, r in results["sets"].items():
        rows = [("label_means", "f1", "F1"), ("label_means", "em", "EM"), ("label_means", "ndcg10", "nDCG@10")]
        rows += [("train_label_means", "f1", "F1 (train)"), ("train_label_means", "em", "EM (train)")]
        for table, key, title in rows:
            means = r.get(table, {}).get(key)
            if means is None:  # results written before this row existed
                continue
            tie = f"{r.get('all_members_tie', 0)}/{r['queries']}" if title == "F1" else ""
            lines.append(f"| {s} | {title} | " + " | ".join(f"{means[m]:.3f}" for m in members) + f" | {tie} |")
    lines += [
        "",
        "Test-label means per member, and each set's own train-label means (what the routers learn from) below "
        "them. Where every member ties (usually all F1 = 0: the 135M generator misses with any context), routing "
        "cannot matter, so those queries dilute every difference between systems. Where the best member on train "
        "is not the best on test, a router that learned its train labels well is wrong on test.",
    ]
    return lines


def _route_lines(results: dict) -> list[str]:
    members = list(results["config_pool"])
    lines = ["| set | system | " + " | ".join(members) + " |", "|---|---|" + "---:|" * len(members)]
    for s, r in results["sets"].items():
        for system in ("r3ag", "oracle"):
            routes = r["systems"][system]["routes"]
            lines.append(f"| {s} | {system} | " + " | ".join(str(routes.get(m, 0)) for m in members) + " |")
    return lines


def _held_out_words(selection: dict) -> str:
    folds = selection.get("folds", 1)
    if folds > 1:
        return f"{folds}-fold cross-validation over each set's train queries, every one held out once"
    return f"{int(100 * selection['held_out_share'])}% of each set's train queries held out"


def _margin_lines(selection: dict) -> list[str]:
    """The abstain (and switch) margin chosen with the mode, and the held-out grid it came from (absent in older
    results)."""
    grid = [g for g in selection.get("grid", []) if g["mode"] == selection["chosen"]]
    if len(grid) < 2:
        return []
    switches = len({g.get("switch", 0.0) for g in grid}) > 1

    def setting(g: dict) -> str:
        return f"{g['margin']:g}/{g.get('switch', 0.0):g}" if switches else f"{g['margin']:g}"

    tried = ", ".join(f"{setting(g)}: {g['macro']:.3f}" + ("" if g.get("safe", True) else " (unsafe)") for g in grid)
    lines = [
        "",
        f"Abstain margin: **{selection['abstain_margin']:g}** (R0 serves a query only when its routing cosine beats "
        f"the best retriever's by more than this; held-out train macro F1 per "
        f"{'abstain/switch margin' if switches else 'margin'}, {selection['chosen']}: {tried}). Every R3AG variant "
        "routes with it; `r3ag-argmax` is the same router with margin 0.",
    ]
    if switches:
        lines += [
            "",
            f"Switch margin: **{selection.get('switch_margin', 0.0):g}** (a retriever other than the default member, "
            "the best retriever on the train labels, serves a query only when its cosine beats the default's by more "
            "than this; chosen in the same grid; `r3ag-argmax` routes with 0).",
        ]
    if selection.get("safe_abstention"):
        lines += ["", _safety_words(grid, setting)]
    return lines


def _safety_words(grid: list[dict], setting) -> str:
    """Which margins passed the held-out abstention check, with the failing sets' EM, R0 vs always-retrieve;
    `setting` names a grid entry."""
    failed = []
    for g in grid:
        bad = [
            f"{ds} {c['em_r0']:.3f} vs {c['em_always']:.3f} on {c['queries']}"
            for ds, c in g.get("abstention", {}).items()
            if not c["safe"]
        ]
        if bad:
            failed.append(f"{setting(g)} ({'; '.join(bad)})")
    return (
        "Safe abstention: a margin qualifies only if, on every set's held-out train queries it routes to R0, EM "
        "with R0 is at least EM with always-retrieve (the member of its baseline row); margin 2 (never abstain) "
        "always qualifies. "
        + (
            "Failed, EM with R0 vs always-retrieve on the R0-routed queries: " + ", ".join(failed) + "."
            if failed
            else "Every margin tried passed."
        )
    )


def _ablation_lines(results: dict) -> list[str]:
    variants = ["r3ag", "r3ag-no-quality", "r3ag-no-utility", "r3ag-mean-fusion", "r3ag-argmax"]
    sets = list(results["sets"])
    variants = [v for v in variants if any(v in r["systems"] for r in results["sets"].values())]
    lines = ["| variant | " + " | ".join(f"{s} F1" for s in sets) + " |", "|---|" + "---:|" * len(sets)]
    for v in variants:
        cells = [results["sets"][s]["systems"].get(v, {}).get("f1") for s in sets]
        lines.append(f"| {v} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells) + " |")
    return lines


def _extend_lines(results: dict, extend: str) -> list[str]:
    lines = [f"| set | without {extend} | {extend} added | full R3AG | routed to {extend} after adding |"]
    lines.append("|---|---:|---:|---:|---:|")
    for s, r in results["sets"].items():
        sy = r["systems"]
        before, after = sy.get(f"r3ag-without-{extend}"), sy.get(f"r3ag+{extend}-added")
        if before is None or after is None:
            continue
        share = after["routes"].get(extend, 0)
        lines.append(f"| {s} | {before['f1']:.3f} | {after['f1']:.3f} | {sy['r3ag']['f1']:.3f} | {share} |")
    return lines


def _abstention_lines(results: dict) -> list[str]:
    lines = ["| set | routed to R0 | F1 with R0 | F1 always-retrieve | EM with R0 | EM always-retrieve |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for s, r in results["sets"].items():
        a = r["abstention"]
        if a["queries"]:
            lines.append(
                f"| {s} | {a['queries']}/{a['of']} | {a['f1_r0']:.3f} | {a['f1_always']:.3f} ({a['always_retrieve']}) "
                f"| {a['em_r0']:.3f} | {a['em_always']:.3f} |"
            )
        else:
            lines.append(f"| {s} | 0/{a['of']} | — | — | — | — |")
    return lines


def _overhead_lines(results: dict) -> list[str]:
    lines = ["| set | router ms/query | retrieval ms/query (per member) | generation s/answer (per member) |"]
    lines.append("|---|---:|---|---|")
    for s, r in results["sets"].items():
        o = r["overhead"]
        search = ", ".join(f"{k} {1000 * v:.1f}" for k, v in o["search_s_per_query"].items())
        gen = ", ".join(f"{k} {v:.2f}" for k, v in o["generation_s_per_answer"].items())
        lines.append(f"| {s} | {1000 * o['router_s_per_query']:.1f} | {search} | {gen} |")
    return lines


def _transfer_lines(results: dict) -> list[str]:
    """Every system's routes scored with the second generator's labels (`generator_eval`), or why there are none."""
    config = results["config"]
    sets = {s: r["transfer"] for s, r in results["sets"].items() if "transfer" in r}
    if not sets:
        return [
            "Not measured. No second offline LLM ships in any installed package (SmolLM2-135M-Instruct is the only "
            "one). Set `generator_eval` (and `template_eval`) in the config to a second generator's spec: it labels "
            "the test queries again, and every system's routes, learned from this generator's labels, are scored on "
            "those labels too."
        ]
    model = next(iter(sets.values()))["model"]
    lines = [
        f"Routes learned from `{config['model']}`'s labels, scored with `{model}`'s answers on the same test queries "
        "(F1; the oracle is recomputed on the second generator's labels; best share: queries where the route is "
        "among the second generator's best members).",
        "",
        "| set | system | F1, " + config["model"] + " | F1, " + model + " | EM, " + model + " | best share |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for s, t in sets.items():
        first = results["sets"][s]["systems"]
        for name, row in t["systems"].items():
            if name.startswith("r3ag-") and name != "r3ag-argmax":
                continue
            before = first.get(name, {}).get("f1")
            lines.append(
                f"| {s} | {name} | {'—' if before is None else f'{before:.3f}'} | {row['f1']:.3f} | {row['em']:.3f} "
                f"| {row['best_share']:.2f} |"
            )
    return lines


def markdown(results: dict, figure: Path | None, report: Path) -> str:
    """The report's markdown, from the results alone."""
    config = results["config"]
    rows = headline(results)
    selection = results["training"]["selection"]
    out = [
        "# R3AG: retriever routing for RAG (CPU profile)",
        "",
        f"Pool `{config['pool']}`; generator `{config['model']}` ({config['template']} template, top {config['k']} "
        f"as context, max {config['max_new_tokens']} new tokens, greedy). Labels: quality = nDCG@10 of each "
        "member's run, utility = answer token F1 (EM beside it); R0 = closed-book. A system's F1/EM on a "
        "query is the label of the member it routes that query to.",
        "",
        "Samples (seeded, per set): "
        + ", ".join(f"{s} {n['train']} train / {n['test']} test" for s, n in results["samples"].items())
        + ". These are small: differences of a few F1 points are within noise (see the p-values). A larger "
        "seeded sample contains nearly all of a smaller one and finished answers stay in the generation cache, "
        "so raising the sizes in the config generates only the new queries.",
        "",
        f"Training mode: **{selection['chosen']}** (held-out train macro F1: pooled {selection['macro']['pooled']:.3f}"
        f", per-set {selection['macro']['per-set']:.3f}; {_held_out_words(selection)}; test queries never choose "
        "anything).",
        *_margin_lines(selection),
        "",
        "## Headline",
        "",
        "| set | test queries | R3AG F1 | R3AG EM | oracle single-best F1 | per-query oracle F1 | best non-oracle "
        "baseline | its F1 | R3AG − it | p (t-test) | p (randomisation) |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['dataset']} | {r['queries']} | {r['r3ag_f1']:.3f} | {r['r3ag_em']:.3f} | {r['oracle_fixed_f1']:.3f}"
            f" | {r['oracle_f1']:.3f} | {r['best_baseline']} | {r['best_baseline_f1']:.3f} "
            f"| {r['delta_vs_best']:+.3f} | {r['p_t']:.3f} | {r['p_randomization']:.3f} |"
        )
    if figure is not None:
        out += ["", f"![F1 by system]({figure.relative_to(report.parent).as_posix()})"]
    out += ["", "## Targets", ""] + _target_lines(results, rows)
    out += ["", "## Where R3AG stands", ""] + _verdicts(rows) + _abstain_verdicts(results)
    out += ["", "## The labels", ""] + _label_lines(results)
    for s, r in results["sets"].items():
        out += ["", f"## {s}: every system ({r['queries']} test queries)", ""] + _system_table(r)
    out += ["", "## Route distribution (test queries)", ""] + _route_lines(results)
    out += ["", "## Ablations (F1)", ""] + _ablation_lines(results)
    out += ["", "## Abstention: test queries R3AG routes to R0", ""] + _abstention_lines(results)
    extend = config["extend"]
    out += ["", f"## Extensibility: train without {extend}, then `add_retriever({extend!r})`", ""]
    out += _extend_lines(results, extend)
    out += ["", "## Routing overhead", ""] + _overhead_lines(results)
    out += [
        "",
        "Generation seconds are per freshly generated answer while labels were built on a shared 2-core CPU "
        "(other jobs ran at the same time), so they are upper bounds.",
        "",
        "## Cross-generator transfer",
        "",
        *_transfer_lines(results),
        "",
        "## Not used here",
        "",
        "- LLM-judge quality labels (`routerank r3ag labels --quality judge`), for sets without qrels: every set here "
        "has qrels.",
    ]
    return "\n".join(out) + "\n"


def _verdicts(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        gap_oracle = r["oracle_f1"] - r["r3ag_f1"]
        word = "beats" if r["delta_vs_best"] > 0 else ("ties" if r["delta_vs_best"] == 0 else "loses to")
        lines.append(
            f"- {r['dataset']}: R3AG {word} the best non-oracle baseline ({r['best_baseline']}) by "
            f"{abs(r['delta_vs_best']):.3f} F1 (p = {r['p_randomization']:.2f}); it is {gap_oracle:.3f} F1 below the "
            f"per-query oracle and {_relative(r['r3ag_f1'] - r['oracle_fixed_f1'])} the oracle single-best member."
        )
    lines.append(
        "- The best non-oracle baseline is the best on the test labels among always-retrieve (the member best on "
        "train labels), never-retrieve, random, centroid, classifier and necessity, which favours the baseline; "
        "single retrievers picked on test labels are the oracle single-best."
    )
    return lines


def _effect(change: float) -> str:
    if abs(change) < 5e-4:
        return "changes nothing"
    return f"{'gains' if change > 0 else 'costs'} {abs(change):.3f} F1"


def _abstain_verdicts(results: dict) -> list[str]:
    lines = []
    for s, r in results["sets"].items():
        a, abstain = r["abstention"], results["config_pool"][0]
        oracle = r["systems"]["oracle"]["routes"].get(abstain, 0)
        if not a["queries"]:
            continue
        change = a["f1_r0"] - a["f1_always"]
        lines.append(
            f"- {s}: R3AG abstains on {a['queries']}/{a['of']} test queries (the per-query oracle on {oracle}); on "
            f"those queries closed-book F1 is {a['f1_r0']:.3f} vs {a['f1_always']:.3f} with always-retrieve "
            f"({a['always_retrieve']}), so abstaining {_effect(change)} there."
        )
    return lines


FIXED = "vs_oracle_fixed"  # R3AG's paired test against the oracle single-best member, in each set's results


def _relative(delta: float) -> str:
    return f"{abs(delta):.3f} above" if delta > 0 else (f"{-delta:.3f} below" if delta < 0 else "level with")


def _p_words(test: dict | None) -> str:
    """ ", p = <randomisation p>" of a paired test record, or nothing without one."""
    return f", p = {test['randomization_pvalue']:.2f}" if test else ""


def _target_lines(results: dict, rows: list[dict]) -> list[str]:
    """Issue 10's three effectiveness targets, each "holds" or by how much it fails."""
    sets = results["sets"]
    beats_fixed = [r for r in rows if r["r3ag_f1"] > r["oracle_fixed_f1"]]
    closest = max(rows, key=lambda r: r["r3ag_f1"] - r["oracle_fixed_f1"])
    first = (
        "holds on "
        + ", ".join(
            f"{r['dataset']} ({r['r3ag_f1'] - r['oracle_fixed_f1']:+.3f} F1{_p_words(sets[r['dataset']].get(FIXED))})"
            for r in beats_fixed
        )
        if beats_fixed
        else (f"fails: closest on {closest['dataset']}, {closest['r3ag_f1'] - closest['oracle_fixed_f1']:+.3f} F1")
    )
    averages = baseline_averages(sets)
    best = max(averages, key=averages.get)
    r3ag = fmean([r["systems"]["r3ag"]["f1"] for r in sets.values()])
    second = "holds" if r3ag > averages[best] else "fails"
    pooled = _p_words(results.get("average"))  # absent from results written before the pooled test existed
    abstain = []
    for name, r in sets.items():
        a = r["abstention"]
        if a["queries"]:
            verdict = "holds" if a["em_r0"] >= a["em_always"] else f"fails by {a['em_always'] - a['em_r0']:.3f}"
            abstain.append(f"{name} {a['em_r0']:.3f} vs {a['em_always']:.3f} ({verdict})")
    third = "; ".join(abstain) if abstain else "R3AG routes no test query to R0"
    return [
        "| target | status |",
        "|---|---|",
        f"| R3AG F1 beats the oracle single-best member on at least one set | {first} |",
        f"| R3AG beats the best non-oracle baseline on average over the sets | {second}: R3AG {r3ag:.3f} vs "
        f"{best} {averages[best]:.3f} ({r3ag - averages[best]:+.3f}{pooled}) |",
        f"| on the queries routed to R0, EM with R0 ≥ EM with always-retrieve | {third} |",
    ]


def write(experiment: R3AGExperiment, report: Path) -> Path:
    """reports/r3ag.md and its JSON (and the figure) from the work dir's results.json."""
    results = json.loads((experiment.work / "results.json").read_text())
    results["config"] = {**results["config"], "datasets": list(results["config"]["datasets"])}
    results["headline"] = headline(results)
    results["state"] = str(experiment.work)
    results["config_pool"] = experiment.pool.names
    figure = _figure(results, report.parent / report.stem)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(markdown(results, figure, report))
    report.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return report
