"""Base58 with the Bitcoin/Solana alphabet: the text form of keys and signatures."""

from __future__ import annotations

from typing import Final

__all__ = ["base58_decode", "base58_encode"]

_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX: Final = {c: i for i, c in enumerate(_ALPHABET)}
# Two digits per divmod halves the big-int work, which dominates signature encoding.
_PAIRS: Final = tuple(a + b for a in _ALPHABET for b in _ALPHABET)
_PAIR_BASE: Final = 58 * 58


def base58_encode(data: bytes) -> str:
    """Encode bytes as base58."""
    number = int.from_bytes(data, "big")
    pairs: list[str] = []
    while number:
        number, rest = divmod(number, _PAIR_BASE)
        pairs.append(_PAIRS[rest])
    pairs.reverse()
    body = "".join(pairs).lstrip("1")
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + body


def base58_decode(text: str) -> bytes:
    """Decode base58 text.

    Raises:
        ValueError: ``text`` contains a character outside the alphabet.
    """
    number = 0
    for char in text:
        try:
            number = number * 58 + _INDEX[char]
        except KeyError:
            raise ValueError(f"invalid base58 character {char!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body
