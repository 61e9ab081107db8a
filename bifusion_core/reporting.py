"""The core never prints: long steps report through a ``Reporter`` the caller supplies.

The CLI passes one backed by Rich progress bars; tests pass ``RecordingReporter``.
"""

from __future__ import annotations

from typing import Any


class Reporter:
    """No-op base. ``task`` opens a bar, ``advance`` moves it, ``note`` is a one-line message."""

    def task(self, name: str, total: int | None) -> None:  # noqa: D401 - interface
        pass

    def advance(self, name: str, n: int = 1) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def metrics(self, values: dict[str, Any]) -> None:
        """Live numbers (training panel); ignored by reporters that do not show them."""

    def alert(self, message: str, level: str = "alert") -> None:
        """A figure outside its normal range ("warning") or an abnormal signal ("alert")."""
        self.note(f"{level}: {message}")


class RecordingReporter(Reporter):
    """Keeps everything it is told, for tests and for summaries."""

    def __init__(self) -> None:
        self.totals: dict[str, int | None] = {}
        self.done: dict[str, int] = {}
        self.notes: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.alerts: list[tuple[str, str]] = []

    def task(self, name: str, total: int | None) -> None:
        self.totals[name] = total
        self.done.setdefault(name, 0)

    def advance(self, name: str, n: int = 1) -> None:
        self.done[name] = self.done.get(name, 0) + n

    def note(self, message: str) -> None:
        self.notes.append(message)

    def metrics(self, values: dict[str, Any]) -> None:
        self.history.append(dict(values))

    def alert(self, message: str, level: str = "alert") -> None:
        self.alerts.append((level, message))


NULL_REPORTER = Reporter()
