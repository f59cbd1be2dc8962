"""`@frozen`: the SIP core's immutable records (URIs' parts, headers' views, transport peers,
events and actions), frozen as mypy checks them and plain slotted dataclasses at run time.

A frozen dataclass's `__init__` sets each field through `object.__setattr__`; for the
dozens of these made per message that was about 5% of a call's instructions (callgrind, the
in-process call replay). Assigning to a field is a type error (`mypy --strict` runs on every
change), and they hash and compare by value like frozen ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True)
def frozen(cls: type[T]) -> type[T]:
    return dataclass(slots=True, unsafe_hash=True)(cls)
