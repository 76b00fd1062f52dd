"""The staged runner every experiment shares: a plan of named steps, each skipped when its output exists.

A step is (name, kind, done, action, needs). `run_plan` walks the plan once: a finished step is "cached", a step
whose inputs are missing or that another process holds (a live lock file with its pid) is left "pending", and
`max_minutes` stops starting new steps after that long. Work can thus be split over sittings and processes:
a killed run loses only the step in flight, and two processes with different `only` kinds can share a work dir.
"""

from __future__ import annotations

import hashlib
import os
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from routerank.errors import RouterankError, SpecError


@dataclass
class Stage:
    """What `run_plan` reports per step: name, kind, whether it is done, how long it ran (None unless it ran this
    time), and a note: "cached", "ran", or why it is pending."""

    name: str
    kind: str
    done: bool = False
    seconds: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Step:
    """One step of a plan: `done()` tells whether its output exists, `action()` makes it, and `needs()` whether its
    inputs are ready (always, by default); `kind` lets `run_plan(only=...)` pick steps."""

    name: str
    kind: str  # e.g. "train" | "route" | "score"
    done: Callable[[], bool]
    action: Callable[[], object]
    needs: Callable[[], bool] = lambda: True


class StageLock:
    """An exclusive per-stage lock file holding the owner's pid; a lock whose process is gone is taken over."""

    def __init__(self, folder: Path, stage: str):
        self.path = folder / (hashlib.sha256(stage.encode()).hexdigest()[:16] + ".lock")
        self.stage, self.owner, self.held = stage, None, False

    def __bool__(self) -> bool:
        return self.held

    def __enter__(self) -> StageLock:

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    self.owner = int(self.path.read_text().split()[0])
                except (OSError, ValueError, IndexError):
                    self.owner = None
                if self.owner is not None and _alive(self.owner):
                    return self
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as out:
                out.write(f"{os.getpid()} {self.stage}\n")
            self.held, self.owner = True, os.getpid()
            return self
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_plan(
    steps: Sequence[Step],
    locks: Path,
    *,
    max_minutes: float | None = None,
    only: set[str] | None = None,
    progress: bool = True,
    tag: str = "run",
) -> list[Stage]:
    """Run each step that is not done, not held by another process, and whose inputs are ready; in order."""
    start = time.perf_counter()
    stages: list[Stage] = []
    stopped = False
    for step in steps:
        stage = Stage(step.name, step.kind)
        stages.append(stage)
        if step.done():
            stage.done, stage.note = True, "cached"
            continue
        if stopped or (only and step.kind not in only):
            stage.note = "pending"
            continue
        if max_minutes is not None and time.perf_counter() - start > 60 * max_minutes:
            stopped, stage.note = True, "pending (time budget reached)"
            continue
        if not step.needs():
            stage.note = "pending (its inputs are not ready)"
            continue
        with StageLock(locks, step.name) as held:
            if not held:
                stage.note = f"pending (running in process {held.owner})"
                continue
            if step.done():  # finished by another process while we looked
                stage.done, stage.note = True, "cached"
                continue
            if progress:
                print(f"[{tag}] {step.name}", flush=True)
            began = time.perf_counter()
            step.action()
            stage.done, stage.seconds, stage.note = True, time.perf_counter() - began, "ran"
    return stages


def read_toml_config(
    config_class, path: str | Path, *, tuples: tuple[str, ...] = (), none_if_zero: tuple[str, ...] = ()
):
    """A config dataclass from a TOML file: unknown keys, bad TOML and a missing file are errors that say so.

    `tuples` lists keys whose TOML arrays become tuples (frozen dataclasses hash them); `none_if_zero` keys whose
    0 means "all" (None)."""

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RouterankError("no such config file", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}", path=path) from None
    known = set(config_class.__dataclass_fields__)
    extra = sorted(set(raw) - known)
    if extra:
        raise SpecError(f"unknown config keys {extra}", path=path, fix=f"known keys: {sorted(known)}")
    for key in none_if_zero:
        if raw.get(key) == 0:
            raw[key] = None
    for key in tuples:
        if key in raw:
            raw[key] = tuple(raw[key])
    try:
        return config_class(**raw)
    except TypeError as exc:
        raise SpecError(str(exc), path=path) from None
