"""What a suite's problems look like: `Problem` (file:line: field path: message), the
`SuiteError` that lists them all, the collector that gathers them, and did-you-mean hints."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

Where = tuple[str, str, int]  # (dotted field path, file, line) of a value in the suite


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str  # dotted field path, e.g. stages[1].recipe.lr
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class SuiteError(ValueError):
    """An invalid suite. `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = (str(p).replace("\n", "\n      ") for p in problems)  # a message's own lines stay indented
        super().__init__(f"invalid suite ({count}):\n" + "\n".join(f"  {line}" for line in lines))


class Errors:
    """Collects every problem of a suite, so that one SuiteError can list them all."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: Where, message: str) -> None:
        path, file, line = where
        problem = Problem(file, line, path, message)
        if problem not in self.problems:  # a defaults value is checked once per stage
            self.problems.append(problem)

    def raise_if_any(self) -> None:
        if self.problems:
            self.problems.sort(key=lambda p: (p.file == "--set", p.file, p.line))  # stable: same line keeps order
            raise SuiteError(self.problems)


def hint(value: Any, allowed) -> str:
    """' (allowed: a, b; did you mean 'x'?)'"""
    allowed = [str(a) for a in allowed]
    shown = ", ".join(allowed[:24]) + (f", ... ({len(allowed)} in all)" if len(allowed) > 24 else "")
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
    return f" (allowed: {shown}" + (f"; did you mean '{close[0]}'?" if close else "") + ")"


def show(value: Any) -> str:
    """A value as a message quotes it: `str 'ten'`, `null`, `an empty list`."""
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return ("a mapping" if isinstance(value, dict) else "a list") if value else \
            ("an empty mapping" if isinstance(value, dict) else "an empty list")
    return f"{type(value).__name__} {value!r}"
