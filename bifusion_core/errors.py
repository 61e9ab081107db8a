"""One error type for bad input, so the CLI can print one line and exit non-zero."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


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


def validation_error(
    exc: ValidationError,
    *,
    names: dict[str, str] | None = None,
    model: type[BaseModel] | None = None,
    default: str = "settings",
    error: type[BifusionError] = BifusionError,
) -> BifusionError:
    """The first problem pydantic found, as one line: where (the dotted key, or the CLI flag
    ``names`` gives for it), the value given and what is allowed.

    A check across several fields names its field first (``"image_size: must be ..."``); an unknown
    key lists the keys ``model`` allows at that place; choices are listed as pydantic gives them.
    """
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if not key and ": " in message:  # a check across fields names its field first
        key, message = message.split(": ", 1)
        value = {}
    where = (names or {}).get(key, key or default)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc) if model is not None else []
        return error(where, f"unknown key (allowed here: {', '.join(allowed)})")
    if "expected" in err.get("ctx", {}):
        message = f"must be one of {err['ctx']['expected']}"
    if isinstance(value, dict):  # a check across several keys of a section
        return error(where, message)
    return error(where, f"invalid value {value!r}: {message}")


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    from pydantic import BaseModel

    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return list(cls.model_fields)
