"""Client constants (client.md §2) and the `ClientConfig` that gathers them."""

from __future__ import annotations

import math
import random
import ssl
from typing import Any, Final, Literal, TypeGuard, final, get_args

import attrs

__all__ = [
    "CONNECT_TIMEOUT",
    "DRAIN_TIMEOUT",
    "GRACEFUL_CLOSE_TIMEOUT",
    "HANDSHAKE_RESPONSE_TIMEOUT",
    "KEEPALIVE_INTERVAL",
    "KEEPALIVE_MISS_DEADLINE",
    "MAX_MESSAGE_SIZE",
    "RECONNECT_BACKOFF_MULTIPLIER",
    "RECONNECT_INITIAL_BACKOFF",
    "RECONNECT_JITTER",
    "RECONNECT_MAX_ATTEMPTS",
    "RECONNECT_MAX_BACKOFF",
    "RECONNECT_MAX_TOTAL",
    "RECONNECT_OVERLOAD_MIN_DELAY",
    "RECONNECT_UNGATED_ATTEMPTS",
    "RECONNECT_UPTIME_RESET",
    "ClientConfig",
]

#: The jitter source of every manager whose `ClientConfig.rng` is None.
_SHARED_JITTER: Final = random.Random()

CONNECT_TIMEOUT: Final = 30.0
"""Seconds allowed for TCP + TLS + the HTTP upgrade."""
HANDSHAKE_RESPONSE_TIMEOUT: Final = 180.0
"""Seconds allowed for each awaited reply during a handshake (create, attach, resume, ack)."""
KEEPALIVE_INTERVAL: Final = 15.0
"""Seconds between pings on an established connection."""
KEEPALIVE_MISS_DEADLINE: Final = 45.0
"""Seconds of inbound silence that declare a connection dead."""
GRACEFUL_CLOSE_TIMEOUT: Final = 10.0
"""Total seconds for one connection's close request and close frame."""
DRAIN_TIMEOUT: Final = 10.0
"""Seconds trailing notifications are awaited after ``Completed``."""
RECONNECT_INITIAL_BACKOFF: Final = 0.25
"""Seconds waited before reconnect attempt 2 (attempt 1 is immediate)."""
RECONNECT_BACKOFF_MULTIPLIER: Final = 2.0
"""Factor by which each further backoff grows."""
RECONNECT_MAX_BACKOFF: Final = 30.0
"""Cap, in seconds, of one backoff before jitter."""
RECONNECT_JITTER: Final = 0.2
"""Each delay is multiplied by ``uniform(1 - j, 1 + j)``."""
RECONNECT_MAX_ATTEMPTS: Final = 20
"""Reconnect attempts allowed per failure window."""
RECONNECT_MAX_TOTAL: Final = 600.0
"""Seconds one failure window may last, time parked at the coordinator excluded."""
RECONNECT_UNGATED_ATTEMPTS: Final = 5
"""Reconnect attempts of a subscription manager that never wait at the coordinator."""
RECONNECT_UPTIME_RESET: Final = 60.0
"""Seconds a connection must stay ``Up`` for its drop to open a new failure window."""
RECONNECT_OVERLOAD_MIN_DELAY: Final = 5.0
"""Minimum seconds before reconnecting after close code 1013 or HTTP 503."""
MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
"""Largest inbound frame in bytes; a larger one closes the connection with 1009."""

Transport = Literal["trio-websocket", "websockets"]
"""The WebSocket library the default connector speaks."""


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or value <= 0:
        raise ValueError(
            f"ClientConfig.{attribute.name} must be a positive number of seconds, got {value!r}"
        )


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or value < 0:
        raise ValueError(f"ClientConfig.{attribute.name} must be >= 0, got {value!r}")


def _multiplier(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or not 1 <= value < math.inf:
        raise ValueError(
            f"ClientConfig.{attribute.name} must be a finite number >= 1, got {value!r}"
        )


def _jitter(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or not 0 <= value < 1:
        raise ValueError(
            f"ClientConfig.{attribute.name} must satisfy 0 <= jitter < 1, got {value!r}"
        )


def _int_at_least(minimum: int) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(
                f"ClientConfig.{attribute.name} must be an integer >= {minimum}, got {value!r}"
            )

    return check


def _optional_instance(kind: type[Any]) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"ClientConfig.{attribute.name} must be a {kind.__module__}.{kind.__qualname__} "
                f"or None, got {type(value).__qualname__}"
            )

    return check


def _transport(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    choices = get_args(Transport)
    if value not in choices:
        raise ValueError(f"ClientConfig.{attribute.name} must be one of {choices}, got {value!r}")


def _bool(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"ClientConfig.{attribute.name} must be a bool, got {value!r}")


@final
@attrs.frozen
class ClientConfig:
    """Every tunable of the managed client; each field defaults to its module constant.

    Timeouts may be ``math.inf`` (no limit). Build variants with ``attrs.evolve``.

    Attributes:
        connect_timeout: Seconds for TCP + TLS + the HTTP upgrade.
        handshake_response_timeout: Seconds for each awaited handshake reply (create,
            attach, resume, subscribe ack).
        keepalive_interval: Seconds between pings on an established connection.
        keepalive_miss_deadline: Seconds of inbound silence, counted only while the
            manager waits on the socket, that declare a connection dead.
        graceful_close_timeout: Total seconds for one connection's close request and
            close frame.
        drain_timeout: Seconds trailing notifications are awaited after ``Completed``.
        reconnect_initial_backoff: Seconds before reconnect attempt 2, before jitter.
        reconnect_backoff_multiplier: Growth factor of each further backoff (>= 1).
        reconnect_max_backoff: Cap of one backoff before jitter; it also caps
            ``reconnect_initial_backoff``.
        reconnect_jitter: ``j`` in ``delay * uniform(1 - j, 1 + j)``; ``0 <= j < 1``.
        reconnect_max_attempts: Reconnect attempts allowed per failure window (>= 1).
        reconnect_max_total: Seconds a failure window may last, parked time excluded.
        reconnect_ungated_attempts: Subscription reconnect attempts that never wait at
            the coordinator (0 gates every attempt).
        reconnect_uptime_reset: Seconds a connection must stay ``Up`` for its drop to
            open a new failure window.
        reconnect_overload_min_delay: Minimum seconds before reconnecting after close
            code 1013 or HTTP 503.
        max_message_size: Largest inbound frame in bytes.
        notification_buffer: Capacity of the channel from a subscription manager to
            the session; when full the manager stops reading (back-pressure).
        event_buffer: Capacity of the channel from the control manager to the session.
        ssl_context: TLS settings for ``wss://``; None means the default verifying
            context. Ignored by ``==`` and ``hash``.
        allow_insecure: Permit sending the API key over plain ``ws://`` to a host that
            is not loopback.
        rng: Random source for backoff jitter; None means one generator the whole
            process shares. Ignored by ``==``, ``hash`` and ``repr``.
        transport: The WebSocket library of the default connector: ``"trio-websocket"``
            or ``"websockets"`` (websockets 17's Trio client, faster; needs the
            ``trio-backtest[websockets]`` extra). A connector passed explicitly wins.
    """

    connect_timeout: float = attrs.field(default=CONNECT_TIMEOUT, validator=_positive)
    handshake_response_timeout: float = attrs.field(
        default=HANDSHAKE_RESPONSE_TIMEOUT, validator=_positive
    )
    keepalive_interval: float = attrs.field(default=KEEPALIVE_INTERVAL, validator=_positive)
    keepalive_miss_deadline: float = attrs.field(
        default=KEEPALIVE_MISS_DEADLINE, validator=_positive
    )
    graceful_close_timeout: float = attrs.field(default=GRACEFUL_CLOSE_TIMEOUT, validator=_positive)
    drain_timeout: float = attrs.field(default=DRAIN_TIMEOUT, validator=_positive)
    reconnect_initial_backoff: float = attrs.field(
        default=RECONNECT_INITIAL_BACKOFF, validator=_non_negative
    )
    reconnect_backoff_multiplier: float = attrs.field(
        default=RECONNECT_BACKOFF_MULTIPLIER, validator=_multiplier
    )
    reconnect_max_backoff: float = attrs.field(
        default=RECONNECT_MAX_BACKOFF, validator=_non_negative
    )
    reconnect_jitter: float = attrs.field(default=RECONNECT_JITTER, validator=_jitter)
    reconnect_max_attempts: int = attrs.field(
        default=RECONNECT_MAX_ATTEMPTS, validator=_int_at_least(1)
    )
    reconnect_max_total: float = attrs.field(default=RECONNECT_MAX_TOTAL, validator=_positive)
    reconnect_ungated_attempts: int = attrs.field(
        default=RECONNECT_UNGATED_ATTEMPTS, validator=_int_at_least(0)
    )
    reconnect_uptime_reset: float = attrs.field(
        default=RECONNECT_UPTIME_RESET, validator=_non_negative
    )
    reconnect_overload_min_delay: float = attrs.field(
        default=RECONNECT_OVERLOAD_MIN_DELAY, validator=_non_negative
    )
    max_message_size: int = attrs.field(default=MAX_MESSAGE_SIZE, validator=_int_at_least(1))
    notification_buffer: int = attrs.field(default=1024, validator=_int_at_least(0))
    event_buffer: int = attrs.field(default=1024, validator=_int_at_least(0))
    ssl_context: ssl.SSLContext | None = attrs.field(
        default=None, eq=False, validator=_optional_instance(ssl.SSLContext)
    )
    allow_insecure: bool = attrs.field(default=False, validator=_bool)
    rng: random.Random | None = attrs.field(
        default=None, eq=False, repr=False, validator=_optional_instance(random.Random)
    )
    transport: Transport = attrs.field(default="trio-websocket", validator=_transport)

    def random_source(self) -> random.Random:
        """Return `rng` if one was given, else the process's shared jitter generator.

        Jitter only has to differ between reconnects, and draws from one generator do;
        a generator per manager would cost each session about 5 KB of state.
        """
        return self.rng if self.rng is not None else _SHARED_JITTER
