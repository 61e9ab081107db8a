"""One error type for bad input, so the CLI can print one line and exit non-zero."""

from __future__ import annotations

from pathlib import Path


class BifusionError(Exception):
    """A problem with user input (a file, a value, a preset) described in one line.

    ``where`` names the file, scene, frame or key; ``problem`` says what is wrong with it.
    """

    def __init__(self, where: str | Path, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")

    def __reduce__(self):  # survives pickling, so a worker process's error reaches the caller intact
        return (self.__class__, (self.where, self.problem))


class ConfigError(BifusionError):
    """A preset key or value that the schema rejects (exit code 2)."""
