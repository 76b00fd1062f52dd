"""The systems of the R2R report's tables: their letters and titles, and the measures they are compared on."""

from __future__ import annotations

KEY = "nDCG@10"

MEASURES = "nDCG@5 nDCG@10 MRR@10 R@100"
INTERPOLATED = "~dev"  # a system's run mixed with the first stage's scores, its alpha chosen on dev
FIRST = "first"  # the candidates' run when the first stage is not BM25 (then "bm25" is plain BM25 beside it)
REFERENCES = ("bm25", FIRST, "generalist", "pooled")  # the rows every other row is tested against
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
