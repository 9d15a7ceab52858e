"""The local server's settings: :class:`ServerConfig` and :class:`ChaosConfig`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, final

import attrs

from ._ledger import LedgerConfig

__all__ = ["Backpressure", "ChaosConfig", "Plane", "ServerConfig"]

Backpressure = Literal["block", "drop"]
"""What a full subscriber queue does: hold execution, or drop the notification."""

Plane = Literal["control", "data", "any"]
"""Which sockets a fault applies to."""

_PLANES = ("control", "data", "any")


def _check_probability(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value}")


def _check_codes(_: object, attribute: attrs.Attribute[tuple[int, ...]], value: object) -> None:
    if not isinstance(value, tuple) or not value:
        raise ValueError("close_codes must be a non-empty tuple")
    for code in value:
        if type(code) is not int or not (1000 <= code <= 4999) or code in (1005, 1006, 1015):
            raise ValueError(f"{code!r} is not a close code a server may send")


@final
@attrs.frozen
class ChaosConfig:
    """Random faults for ``trio-backtest serve --chaos``: seeded, so a run can be repeated.

    Per-message faults fire right after the server sent a message on a matching socket;
    interval faults hit a random live matching socket after an exponentially distributed
    pause.
    """

    seed: int = 0
    """Seed of the fault schedule."""
    drop_probability: float = attrs.field(default=0.0, validator=_check_probability)
    """Chance that a sent message is followed by an abrupt loss of its socket."""
    close_probability: float = attrs.field(default=0.0, validator=_check_probability)
    """Chance that a sent message is followed by a close with one of ``close_codes``."""
    mean_interval: float | None = None
    """Mean seconds between interval faults (each a drop or a close, half and half);
    ``None`` for none."""
    close_codes: tuple[int, ...] = attrs.field(
        default=(1001, 1011, 1012, 1013), converter=tuple, validator=_check_codes
    )
    """Codes a chaos close picks from."""
    plane: Plane = "any"
    """Sockets chaos applies to."""
    http_drop: float = attrs.field(default=0.0, validator=_check_probability)
    """Chance that an HTTP JSON-RPC request's connection is dropped before it is handled."""
    http_lose_answer: float = attrs.field(default=0.0, validator=_check_probability)
    """Chance that an HTTP JSON-RPC request is handled and its answer lost (dropped)."""
    http_bad_gateway: float = attrs.field(default=0.0, validator=_check_probability)
    """Chance that an HTTP JSON-RPC request is answered 502 with an empty body, unhandled."""
    http_delay: float = 0.0
    """Seconds added before every HTTP JSON-RPC answer."""

    def __attrs_post_init__(self) -> None:
        if self.mean_interval is not None and not (
            math.isfinite(self.mean_interval) and self.mean_interval > 0
        ):
            raise ValueError("mean_interval must be a positive number of seconds")
        if self.plane not in _PLANES:
            raise ValueError(f"plane must be one of {_PLANES}, got {self.plane!r}")
        if self.http_drop + self.http_lose_answer + self.http_bad_gateway > 1.0:
            raise ValueError("http_drop + http_lose_answer + http_bad_gateway must not exceed 1")
        if not (math.isfinite(self.http_delay) and self.http_delay >= 0):
            raise ValueError("http_delay must be a finite number of seconds >= 0")

    @property
    def active(self) -> bool:
        """Whether any fault can fire at all."""
        return (
            bool(self.drop_probability or self.close_probability or self.mean_interval)
            or self.http_active
        )

    @property
    def http_active(self) -> bool:
        """Whether any HTTP data-plane fault is configured."""
        return bool(
            self.http_drop or self.http_lose_answer or self.http_bad_gateway or self.http_delay
        )


def _keys(value: str | Iterable[str]) -> tuple[str, ...]:
    keys = (value,) if isinstance(value, str) else tuple(value)
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise ValueError("api_keys must be a non-empty sequence of non-empty strings")
    return keys


@final
@attrs.frozen
class ServerConfig:
    """Everything that shapes a local server; :func:`open_local_server` builds one."""

    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 0
    """TCP port; 0 picks a free one."""
    api_keys: tuple[str, ...] = attrs.field(default=("local-dev-key",), converter=_keys, repr=False)
    """Accepted ``X-API-Key`` values. Never shown in a repr."""
    ledger: LedgerConfig = attrs.field(factory=LedgerConfig)
    """The synthetic ledger."""
    startup_delay: float = 0.0
    """Seconds a create spends in its start-up phases (``status`` messages meanwhile)."""
    snake_case: bool = False
    """Emit inline keys snake_case (``session_id``) instead of camelCase."""
    backpressure: Backpressure = "block"
    """What a full subscriber queue does."""
    queue_size: int = 4096
    """Notifications one data-plane socket may have waiting."""
    max_message_size: int = 16 * 1024 * 1024
    """Largest message accepted from a client; bigger ones close the socket with 1009."""
    tcp: bool = True
    """Listen on TCP; ``False`` serves the in-memory connector only."""
    chaos: ChaosConfig | None = None
    """Random faults; ``None`` for none."""
    replay_window: int = 100
    """Executed slots whose notifications a session keeps for ``replayFromSlot``."""
    sequence_retention: int = 10_000
    """Sequenced control messages a resumable session keeps for re-attach."""
    max_sessions_per_key: int = 64
    """Live sessions (parallel batches count once) one API key may hold."""
    max_subscriptions_per_socket: int = 1024
    """Subscriptions one data-plane socket may hold."""
    garbage_limit: int = 10
    """Malformed control frames tolerated per connection; the next one closes it with 1008."""
    completed_linger: float = 1.0
    """After ``completed``, seconds a new data-plane socket stays open after its last
    request, so a client can resubscribe everything it lost before it is closed (1000)."""
    handshake_timeout: float = 10.0
    """Seconds a new connection has to send its HTTP request."""
    discovery_lookahead: int = 8
    """Slots ahead of the session's position scanned for ``discoveries``."""
    record: bool = True
    """Keep a per-session record of the frames written (for ``delivered()``); turn it off
    for long runs."""
    record_limit: int = 100_000
    """Most frames a session's record keeps (the newest)."""
    reference_cache_slots: int = 32
    """Executed slots each shared reference execution keeps for sessions that lag behind the
    furthest one; an older slot is executed again (deterministically) when needed."""
    legacy_sessions_created: bool = False
    """Send ``sessionsCreatedV2`` without ``startSlots``/``endSlots``, as servers before the
    reference 0.13 did (so clients can be tested against them)."""
    ranges_start_slot: int = 0
    """First slot of the window ``GET /available-ranges`` lists (the ledger serves every slot;
    the listing is bounded)."""
    ranges_count: int = 100
    """Bundles ``GET /available-ranges`` lists, each a range whose ``snapshotSlot`` is its
    bundle's first slot."""
    http_keepalive_timeout: float = 75.0
    """Seconds an idle HTTP keep-alive connection stays open."""
    max_http_body: int = 4 * 1024 * 1024
    """Largest JSON-RPC request body accepted over HTTP; a bigger one gets HTTP 413."""

    def __attrs_post_init__(self) -> None:
        if self.backpressure not in ("block", "drop"):
            raise ValueError(f"backpressure must be 'block' or 'drop', got {self.backpressure!r}")
        for name in (
            "queue_size",
            "max_message_size",
            "replay_window",
            "sequence_retention",
            "max_sessions_per_key",
            "max_subscriptions_per_socket",
            "discovery_lookahead",
            "record_limit",
            "reference_cache_slots",
            "ranges_count",
            "max_http_body",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.ranges_start_slot < 0:
            raise ValueError("ranges_start_slot must be >= 0")
        if self.http_keepalive_timeout <= 0:
            raise ValueError("http_keepalive_timeout must be > 0")
        if self.startup_delay < 0 or self.completed_linger < 0 or self.handshake_timeout <= 0:
            raise ValueError("delays must be >= 0 and handshake_timeout > 0")
        if self.garbage_limit < 0:
            raise ValueError("garbage_limit must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be within 0..65535, got {self.port}")
