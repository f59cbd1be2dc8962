"""Field readers that validate raw TOML values and collect every problem with its field path.

Validation reports all problems at once (an operator fixes a file in one pass), so readers never
raise: they record a problem and return a safe default that keeps the rest of the pass going.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

# The reference guide's limits: names, descriptions and most strings 250 characters, addresses
# (FQDNs, hosts) 255, usernames 100.
MAX_STRING = 250
MAX_ADDRESS = 255
MAX_USERNAME = 100

E = TypeVar("E", bound=str)


@dataclass
class Problems:
    """Collected validation problems, each `path: message`."""

    items: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def __bool__(self) -> bool:
        return bool(self.items)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Section:
    """A TOML table being read at `path`; remembers which keys were consumed."""

    def __init__(self, raw: Any, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            problems.add(path, f"must be a table, got {_kind(raw)}")
            raw = {}
        self.raw: Mapping[str, Any] = raw
        self._seen: set[str] = set()

    def value(self, key: str) -> Any:
        """The raw value, for readers of shapes this class has no method for."""
        self._seen.add(key)
        return self.raw.get(key)

    def has(self, key: str) -> bool:
        return key in self.raw

    def string(
        self, key: str, default: str = "", *, max_len: int = MAX_STRING, required: bool = False
    ) -> str:
        value = self.value(key)
        path = join(self.path, key)
        if value is None:
            if required:
                self.problems.add(path, "is required")
            return default
        if not isinstance(value, str):
            self.problems.add(path, f"must be a string, got {_kind(value)}")
            return default
        if len(value) > max_len:
            self.problems.add(path, f"is {len(value)} characters, at most {max_len} allowed")
            return value[:max_len]
        if required and not value:
            self.problems.add(path, "must not be empty")
        text: str = value
        return text

    def integer(
        self, key: str, default: int, *, low: int | None = None, high: int | None = None
    ) -> int:
        value = self.value(key)
        path = join(self.path, key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.add(path, f"must be an integer, got {_kind(value)}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            self.problems.add(path, f"{value} is out of range {_range(low, high)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.value(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problems.add(join(self.path, key), f"must be true or false, got {_kind(value)}")
            return default
        return value

    def choice(self, key: str, default: E, allowed: Sequence[E]) -> E:
        value = self.string(key, default)
        for option in allowed:
            if value == option:
                return option  # the typed constant, not the raw value
        self.problems.add(
            join(self.path, key), f"{value!r} is not one of {', '.join(map(repr, allowed))}"
        )
        return default

    def string_list(self, key: str, *, max_len: int = MAX_STRING) -> tuple[str, ...]:
        value = self.value(key)
        path = join(self.path, key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problems.add(path, f"must be a list of strings, got {_kind(value)}")
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            item_path = join(path, index)
            if not isinstance(item, str):
                self.problems.add(item_path, f"must be a string, got {_kind(item)}")
            elif len(item) > max_len:
                self.problems.add(item_path, f"is {len(item)} characters, at most {max_len}")
            else:
                out.append(item)
        return tuple(out)

    def table(self, key: str) -> Section:
        return Section(self.value(key), join(self.path, key), self.problems)

    def tables(self, key: str) -> list[Section]:
        """An array of tables (`[[key]]`)."""
        value = self.value(key)
        path = join(self.path, key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.add(path, f"must be an array of tables ([[{key}]]), got {_kind(value)}")
            return []
        return [Section(item, join(path, i), self.problems) for i, item in enumerate(value)]

    def reject_unknown(self) -> None:
        """Unknown keys are errors: a typo must not silently fall back to a default."""
        for key in self.raw:
            if key not in self._seen:
                self.problems.add(join(self.path, key), "unknown field")


def check_unique(
    names: Iterable[tuple[str, str]], problems: Problems, what: str, *, fold: bool = False
) -> None:
    """Report every (path, name) whose name repeats an earlier one."""
    first: dict[str, str] = {}
    for path, name in names:
        key = name.casefold() if fold else name
        if key in first:
            problems.add(path, f"duplicate {what} {name!r} (first at {first[key]})")
        else:
            first[key] = path


def check_reference(
    path: str, name: str, known: Iterable[str], problems: Problems, what: str
) -> None:
    """An empty reference means "none / automatic"; anything else must name a configured object."""
    if name and name not in set(known):
        problems.add(path, f"unknown {what} {name!r}")


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _range(low: int | None, high: int | None) -> str:
    return f"{'' if low is None else low}..{'' if high is None else high}"
