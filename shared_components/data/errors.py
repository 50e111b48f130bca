"""One exception for bad input data that lists every problem at once, each naming the case, file and fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem with one case: what is wrong, in which file, and what to do about it."""

    case: str
    file: str
    issue: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.case}] {self.file}: {self.issue} -> {self.fix}"


class DataValidationError(ValueError):
    """Raised with every :class:`Problem` found, so a user fixes them all in one pass."""

    def __init__(self, problems: list[Problem], source: str = "dataset"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  {i + 1}. {p}" for i, p in enumerate(self.problems))
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[type, tuple[list[Problem], str]]:
        """Pickled (DataLoader workers, ``copy``) from the problems rather than the message (bugbear B042)."""
        return type(self), (self.problems, self.source)
