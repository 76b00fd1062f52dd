"""The R2R report's figures: nDCG@10 per system and domain, the forgetting matrix, the latent router's confusion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from studies.r2r.systems import KEY, ordered_systems, system_title
from studies.report_format import pyplot, save_png

LATENT = "latent-linear (backbone h_q)"


def figures(data: dict, names: list[str], labels: dict[str, str], folder: Path) -> list[Path]:
    """The figures that the data has numbers for, as PNGs in `folder` (none without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    if ordered_systems(data["table"]):
        made.append(_bars(plt, data["table"], names, labels, folder / "ndcg10.png"))
    matrix = data.get("forgetting")
    if matrix and any(v is not None for row in matrix["values"] for v in row):
        made.append(
            _heatmap(
                plt,
                matrix["values"],
                matrix["rows"],
                matrix["columns"],
                ("evaluated on", "expert"),
                f"{KEY}: every EAG expert on every domain",
                folder / "forgetting.png",
            )
        )
    confusion = data.get("routing", {}).get("routers", {}).get(LATENT, {}).get("confusion")
    if confusion:
        made.append(
            _heatmap(
                plt,
                confusion["counts"],
                confusion["rows"],
                confusion["columns"],
                ("predicted", "true domain"),
                "latent router confusion (test queries)",
                folder / "routing-confusion.png",
                fmt="d",
            )
        )
    return made


def _bars(plt: Any, table: dict, names: list[str], labels: dict[str, str], path: Path) -> Path:
    systems = ordered_systems(table)
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
    return save_png(plt, fig, path)


def _heatmap(
    plt: Any, values: list, rows: list, columns: list, axes: tuple[str, str], title: str, path: Path, fmt: str = ".3f"
) -> Path:
    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(columns), 1.0 + 0.6 * len(rows)))
    ax.imshow(grid, cmap="viridis")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not np.isnan(grid[i, j]):
                text = format(int(grid[i, j]) if fmt == "d" else grid[i, j], fmt)
                ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_png(plt, fig, path)
