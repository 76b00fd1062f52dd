"""Workers that Ray actors build in the scale tests (importable by the workers, as `tests.scale.workers`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from routerank.errors import DataFormatError


class SlowDoubler:
    """Doubles a number after a pause; records each construction (pid) in `log_dir`, so a test sees restarts."""

    def __init__(self, log_dir: str, pause: float = 0.3):
        self.pause = pause
        Path(log_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))

    def run(self, x: int) -> np.ndarray:
        time.sleep(self.pause)
        return np.array([2 * x], dtype=np.int64)


class Picky:
    """Fails on negative input the way routerank code fails on bad input, and on zero with a plain exception."""

    def run(self, x: int) -> np.ndarray:
        if x < 0:
            raise DataFormatError(f"negative input {x}", fix="give non-negative numbers")
        if x == 0:
            raise ValueError("zero is not allowed")
        return np.array([x])


def where(tag: str) -> tuple[str, str]:
    import ray

    time.sleep(0.5)
    return tag, ray.get_runtime_context().get_node_id()
