"""The one results table every bench row goes into: row, measured, target, pass/fail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    value: str
    target: str = "report"  # "report": informational, no target to meet
    ok: bool | None = True  # None: not judged (informational, or not measured in this run)

    @property
    def verdict(self) -> str:
        if self.ok is None or self.target == "report":
            return "-"
        return "yes" if self.ok else "NO"


def not_measured(name: str, target: str, why: str) -> Row:
    """A row this run could not measure: shown with the reason, judged neither way."""
    return Row(f"{name} — not measured ({why})", "-", target, ok=None)


def print_table(title: str, rows: list[Row]) -> None:
    width = max([62, *(len(row.name) + 2 for row in rows)])
    print(f"\n{title:<{width}}{'measured':>12}{'target':>12}  pass")
    for row in rows:
        print(f"{row.name:<{width}}{row.value:>12}{row.target:>12}  {row.verdict}")


def failed(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row.ok is False and row.target != "report"]
