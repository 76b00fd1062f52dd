"""Errors that speak to the user: each names the file, the line where it applies, and a fix."""

from __future__ import annotations

from pathlib import Path


class RouterankError(Exception):
    """Base class; the CLI prints these as one line on stderr and exits with code 2."""

    def __init__(
        self, message: str, *, path: str | Path | None = None, line: int | None = None, fix: str | None = None
    ):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{where}{self.message}{fix}"


class DataFormatError(RouterankError):
    """A file that cannot be parsed: bad JSON, bad encoding, missing field, wrong column count."""


class DuplicateIdError(DataFormatError):
    """Two records share one id."""


class EmptyFileError(DataFormatError):
    """A file that holds no records."""


class UnknownIdError(DataFormatError):
    """Qrels or runs that name documents or queries the dataset does not have."""


class SplitNotFoundError(RouterankError):
    """A qrels split that does not exist."""


class DatasetNotFoundError(RouterankError):
    """No dataset folder of that name under the data root."""


class CorruptIndexError(RouterankError):
    """An on-disk index whose files are missing, truncated or altered."""


class StaleIndexError(CorruptIndexError):
    """An on-disk index built for another corpus, model or configuration."""


class SpecError(RouterankError):
    """A pipeline, model or measure spec string that cannot be parsed or resolved."""


class MissingDependencyError(RouterankError):
    """An optional dependency needed for this feature is not installed."""
