"""What the GRPO trainer tests (ProRank, Rank-R1) share: the tiny random-init model, and a task whose records
come from candidate pools mined once per module instead of on every call."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


def tiny():
    """A fresh (model, tokenizer) pair, the same weights every call."""
    from routerank.models.llm import tiny_llm

    return tiny_llm(seed=0)


def task_on_pools(task, build_records: Callable, cfg, pools):
    """`task` with its records built from `pools` (what `records` would otherwise mine again)."""
    return dataclasses.replace(task, records=lambda tokenizer: build_records(cfg, tokenizer, pools))
