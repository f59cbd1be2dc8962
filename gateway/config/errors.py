"""Errors of the configuration package."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` lists every `field.path: message`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        listing = "\n".join(f"  {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}\n{listing}")
