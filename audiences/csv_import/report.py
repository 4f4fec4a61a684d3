"""What an import did: counts, rejected rows and warnings, each with its line number."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    line: int
    key: str  # the row's external id (or address), as written in the file
    reason: str


@dataclass
class ImportReport:
    kind: str
    path: str
    rows: int = 0  # data rows read
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    touched_customers: int = 0  # customers whose features were invalidated
    seconds: float = 0.0

    @property
    def accepted(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def reject(self, line: int, key: str, reason: str) -> None:
        self.rejected.append(Problem(line, key, reason))

    def warn(self, line: int, key: str, reason: str) -> None:
        self.warnings.append(Problem(line, key, reason))

    def write_problems(self, path: Path) -> None:
        """Every rejected row and warning, one per line, for the operator to fix and re-import."""
        with path.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["line", "key", "outcome", "reason"])
            items = [(p, "rejected") for p in self.rejected] + [(p, "warning") for p in self.warnings]
            for problem, outcome in sorted(items, key=lambda item: item[0].line):
                out.writerow([problem.line, problem.key, outcome, problem.reason])

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": len(self.rejected),
            "warnings": len(self.warnings),
            "seconds": round(self.seconds, 2),
        }
