from __future__ import annotations

import math
import random
import ssl
from typing import Any

import attrs
import pytest

from trio_backtest import _config
from trio_backtest._config import ClientConfig


def make(**fields: Any) -> ClientConfig:
    return ClientConfig(**fields)


# client.md §2, copied by hand so a change to either side is noticed.
SPEC_TABLE = {
    "CONNECT_TIMEOUT": 30.0,
    "HANDSHAKE_RESPONSE_TIMEOUT": 180.0,
    "KEEPALIVE_INTERVAL": 15.0,
    "KEEPALIVE_MISS_DEADLINE": 45.0,
    "GRACEFUL_CLOSE_TIMEOUT": 10.0,
    "DRAIN_TIMEOUT": 10.0,
    "RECONNECT_INITIAL_BACKOFF": 0.25,
    "RECONNECT_BACKOFF_MULTIPLIER": 2.0,
    "RECONNECT_MAX_BACKOFF": 30.0,
    "RECONNECT_JITTER": 0.2,
    "RECONNECT_MAX_ATTEMPTS": 20,
    "RECONNECT_MAX_TOTAL": 600.0,
    "RECONNECT_UNGATED_ATTEMPTS": 5,
    "RECONNECT_UPTIME_RESET": 60.0,
    "RECONNECT_OVERLOAD_MIN_DELAY": 5.0,
    "MAX_MESSAGE_SIZE": 16 * 1024 * 1024,
}


@pytest.mark.parametrize(("name", "value"), SPEC_TABLE.items())
def test_constant_matches_spec_and_is_the_field_default(name: str, value: float) -> None:
    assert getattr(_config, name) == value
    assert getattr(ClientConfig(), name.lower()) == value


def test_every_constant_has_a_field() -> None:
    fields = {f.name for f in attrs.fields(ClientConfig)}
    assert {name.lower() for name in SPEC_TABLE} <= fields
    assert set(_config.__all__) == {*SPEC_TABLE, "ClientConfig"}


def test_extra_defaults() -> None:
    config = ClientConfig()
    assert config.notification_buffer == 1024
    assert config.event_buffer == 1024
    assert config.ssl_context is None
    assert config.allow_insecure is False
    assert config.rng is None


def test_frozen_and_evolve() -> None:
    config = ClientConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.connect_timeout = 1.0  # type: ignore[misc]
    faster = attrs.evolve(config, connect_timeout=1.0, reconnect_max_attempts=3)
    assert faster.connect_timeout == 1.0
    assert faster.reconnect_max_attempts == 3
    assert config.connect_timeout == 30.0


def test_ssl_context_and_rng_ignored_by_eq_and_hash() -> None:
    plain = ClientConfig()
    fancy = ClientConfig(ssl_context=ssl.create_default_context(), rng=random.Random(7))
    assert plain == fancy
    assert hash(plain) == hash(fancy)
    assert ClientConfig(connect_timeout=1.0) != plain


def test_rng_not_in_repr() -> None:
    config = ClientConfig(rng=random.Random(7))
    assert "rng" not in repr(config)
    assert "connect_timeout=30.0" in repr(config)


def test_random_source() -> None:
    rng = random.Random(3)
    assert ClientConfig(rng=rng).random_source() is rng
    shared = ClientConfig().random_source()
    assert isinstance(shared, random.Random)
    # Without one, every manager of the process draws from the same generator.
    assert ClientConfig(connect_timeout=1.0).random_source() is shared


def test_infinite_timeouts_allowed() -> None:
    config = ClientConfig(connect_timeout=math.inf, reconnect_max_total=math.inf)
    assert config.connect_timeout == math.inf


def test_ints_accepted_for_float_fields() -> None:
    assert ClientConfig(connect_timeout=5).connect_timeout == 5


TIMEOUT_FIELDS = [
    "connect_timeout",
    "handshake_response_timeout",
    "keepalive_interval",
    "keepalive_miss_deadline",
    "graceful_close_timeout",
    "drain_timeout",
    "reconnect_max_total",
]


@pytest.mark.parametrize("field", TIMEOUT_FIELDS)
@pytest.mark.parametrize("bad", [0, -1.0, math.nan, "5", True, None])
def test_timeouts_must_be_positive_numbers(field: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=rf"ClientConfig\.{field} must be a positive number"):
        make(**{field: bad})


@pytest.mark.parametrize(
    "field",
    [
        "reconnect_initial_backoff",
        "reconnect_max_backoff",
        "reconnect_uptime_reset",
        "reconnect_overload_min_delay",
    ],
)
def test_non_negative_durations(field: str) -> None:
    assert getattr(make(**{field: 0}), field) == 0
    with pytest.raises(ValueError, match=rf"ClientConfig\.{field} must be >= 0, got -0\.1"):
        make(**{field: -0.1})


@pytest.mark.parametrize("bad", [0.5, 0, -2.0, math.inf, math.nan])
def test_multiplier_at_least_one_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="reconnect_backoff_multiplier must be a finite number"):
        ClientConfig(reconnect_backoff_multiplier=bad)
    assert ClientConfig(reconnect_backoff_multiplier=1).reconnect_backoff_multiplier == 1


@pytest.mark.parametrize("bad", [-0.01, 1.0, 1.5, math.nan])
def test_jitter_range(bad: float) -> None:
    with pytest.raises(ValueError, match=r"0 <= jitter < 1"):
        ClientConfig(reconnect_jitter=bad)


@pytest.mark.parametrize("good", [0, 0.0, 0.5, 0.999])
def test_jitter_accepted(good: float) -> None:
    assert ClientConfig(reconnect_jitter=good).reconnect_jitter == good


@pytest.mark.parametrize(
    ("field", "minimum"),
    [
        ("reconnect_max_attempts", 1),
        ("reconnect_ungated_attempts", 0),
        ("max_message_size", 1),
        ("notification_buffer", 0),
        ("event_buffer", 0),
    ],
)
def test_integer_fields(field: str, minimum: int) -> None:
    assert getattr(make(**{field: minimum}), field) == minimum
    for bad in (minimum - 1, 2.0, True, None):
        with pytest.raises(ValueError, match=rf"{field} must be an integer >= {minimum}"):
            make(**{field: bad})


def test_ssl_context_and_rng_types_checked() -> None:
    with pytest.raises(TypeError, match=r"ssl_context must be a ssl\.SSLContext"):
        ClientConfig(ssl_context="yes please")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rng must be a random\.Random"):
        ClientConfig(rng=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allow_insecure must be a bool"):
        ClientConfig(allow_insecure=1)  # type: ignore[arg-type]
