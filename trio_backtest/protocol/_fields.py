"""Field helpers shared by the wire models: spellings and omission rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["camel", "extra_field", "omitted_if_none", "snake"]

#: Metadata flag: the key is left out of the encoded message when the value is ``None``.
OMIT_NONE = "trio_backtest.omit_none"


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
