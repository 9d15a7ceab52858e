"""Field helpers shared by the wire models: spellings and omission rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

import attrs

__all__ = ["U64_MAX", "camel", "extra_field", "is_u64", "omitted_if_none", "snake"]

#: Metadata flag: the key is left out of the encoded message when the value is ``None``.
OMIT_NONE = "trio_backtest.omit_none"

#: Slots and ``seqId``s are unsigned 64-bit integers (protocol.md §7).
U64_MAX = 2**64 - 1


def is_u64(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an unsigned 64-bit integer (never a bool, float or string)."""
    return type(value) is int and 0 <= value <= U64_MAX


def camel(name: str) -> str:
    """``disconnect_timeout_secs`` -> ``disconnectTimeoutSecs``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake(name: str) -> str:
    """``disconnectTimeoutSecs`` -> ``disconnect_timeout_secs``."""
    out: list[str] = []
    for char in name:
        if char.isupper():
            out.append("_")
            out.append(char.lower())
        else:
            out.append(char)
    return "".join(out)


def omitted_if_none() -> Any:
    """An optional field that defaults to ``None`` and is not sent while unset."""
    return attrs.field(default=None, kw_only=True, metadata={OMIT_NONE: True})


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else dict(value)


def extra_field() -> Any:
    """Unknown keys of a received message, kept and sent back out untouched."""
    return attrs.field(factory=dict, kw_only=True, converter=_freeze_mapping, repr=False)
