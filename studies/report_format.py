"""The formats every study's report shares: p-values, numbers with a dash for a missing one, and matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routerank.fsutil import atomic_write

DASH = "–"


def format_p(value: float | None, missing: str = DASH) -> str:
    """A p-value: three decimals, or scientific notation below 0.001; `missing` for None."""
    if value is None:
        return missing
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def format_value(value: float | None, digits: int = 4) -> str:
    """A number to `digits` decimals; a dash for None."""
    return DASH if value is None else f"{value:.{digits}f}"


def pyplot() -> Any | None:
    """matplotlib.pyplot on the Agg backend, or None where matplotlib is not installed (reports skip figures)."""
    try:
        import matplotlib  # heavy, and optional: loaded only when a report draws a figure

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_png(plt: Any, fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` as a PNG at `path` atomically, and close it."""
    with atomic_write(path, "wb") as out:
        fig.savefig(out, format="png", dpi=dpi)
    plt.close(fig)
    return path


def format_seconds(value: float | None) -> str:
    """A duration: hours to two decimals from an hour up, else whole seconds; a dash for None."""
    if value is None:
        return DASH
    return f"{value / 3600:.2f} h" if value >= 3600 else f"{value:.0f} s"
