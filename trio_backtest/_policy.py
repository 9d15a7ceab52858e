"""The reconnect policy (client.md §3): why a connection ended, and what to do next.

Pure: time and randomness come in as arguments, nothing here sleeps or reads a clock.

Attempt numbers: within one failure window, reconnect attempts are numbered 1, 2, 3, ...
Attempt 1 is the first reconnect attempt after a drop that opened the window (or after a
failed first connect); each failed attempt, and each drop of a connection that did not stay
``Up`` for ``reconnect_uptime_reset``, asks for the next number. A `Retry` names the number
of the attempt it allows; attempt ``reconnect_max_attempts + 1`` is never allowed.
"""

from __future__ import annotations

import contextlib
import enum
import http
import math
import random
from typing import Final, final

import attrs

from ._config import ClientConfig

__all__ = [
    "CauseKind",
    "DisconnectCause",
    "FailureWindow",
    "GiveUp",
    "ReconnectPolicy",
    "Retry",
    "is_final",
    "is_overload",
]


class CauseKind(enum.Enum):
    """What kind of event ended a connection or a connection attempt."""

    CONNECT_FAILED = "connect_failed"
    """TCP or the upgrade failed without an HTTP status (refused, reset, DNS, a malformed
    answer to the upgrade)."""
    TLS = "tls"
    """The TLS handshake failed: a certificate that does not verify, or a peer that does
    not speak TLS (``detail`` names the error). Final."""
    HTTP_STATUS = "http_status"
    """The server refused the upgrade with an HTTP status (in ``code``)."""
    CLOSED = "closed"
    """The WebSocket was closed (close code in ``code``; None when there was none)."""
    TIMEOUT = "timeout"
    """A connect or handshake step took too long (``detail`` names it)."""
    KEEPALIVE = "keepalive"
    """No inbound frame within the keepalive deadline."""
    PROTOCOL = "protocol"
    """The server's traffic broke protocol.md during a handshake."""
    SERVER_ERROR = "server_error"
    """The server answered a handshake request with a ``BacktestError`` (``variant``)."""
    CREATE_REJECTED = "create_rejected"
    """The server answered ``createBacktestSession`` with ``InvalidRequest``."""
    OVERSIZE = "oversize"
    """An inbound frame exceeded ``max_message_size``; the client closed with 1009."""
    SUBSCRIBE_REJECTED = "subscribe_rejected"
    """A data-plane subscribe got a JSON-RPC error other than the replay-window one."""


# Close codes by RFC 6455 §7.4 / the IANA registry, plus the local server's 4404.
_CLOSE_CODE_NAMES: Final[dict[int, str]] = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received",
    1006: "abnormal closure",
    1007: "invalid payload data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure",
    4404: "session not found",
}

_FINAL_HTTP_STATUSES: Final = frozenset({401, 403})
_FINAL_CLOSE_CODES: Final = frozenset({1008, 4404})
# Compared case-insensitively: decoders accept camelCase variant names too (protocol.md §4).
_FINAL_SERVER_ERRORS: Final = frozenset({"sessionnotfound", "sessionownermismatch"})
_OVERLOAD_CLOSE_CODE: Final = 1013
_OVERLOAD_HTTP_STATUS: Final = 503


@final
@attrs.frozen
class DisconnectCause:
    """Why a connection ended or a connection attempt failed.

    Build one with the class-method constructors. ``detail`` is for humans and must never
    contain an API key or other secret; callers pass server text and exception text only.

    Attributes:
        kind: What happened.
        code: The close code (`CauseKind.CLOSED`), HTTP status (`CauseKind.HTTP_STATUS`)
            or JSON-RPC error code (`CauseKind.SUBSCRIBE_REJECTED`); None otherwise.
        detail: One line of human-readable context.
        variant: The ``BacktestError`` variant name for `CauseKind.SERVER_ERROR`.
    """

    kind: CauseKind
    code: int | None = None
    detail: str = ""
    variant: str | None = None

    @classmethod
    def connect_failed(cls, detail: str) -> DisconnectCause:
        """The transport could not be opened (refused, reset, DNS, a malformed upgrade)."""
        return cls(CauseKind.CONNECT_FAILED, detail=detail)

    @classmethod
    def tls(cls, detail: str) -> DisconnectCause:
        """The TLS handshake failed (certificate, protocol mismatch)."""
        return cls(CauseKind.TLS, detail=detail)

    @classmethod
    def http_status(cls, status: int, detail: str = "") -> DisconnectCause:
        """The upgrade was refused with HTTP ``status``."""
        return cls(CauseKind.HTTP_STATUS, code=status, detail=detail)

    @classmethod
    def closed(cls, code: int | None, reason: str = "") -> DisconnectCause:
        """The WebSocket closed with ``code`` (None: no close code) and ``reason``."""
        return cls(CauseKind.CLOSED, code=code, detail=reason)

    @classmethod
    def timeout(cls, what: str) -> DisconnectCause:
        """Waiting for ``what`` (e.g. ``"sessionCreated"``) took too long."""
        return cls(CauseKind.TIMEOUT, detail=what)

    @classmethod
    def keepalive(cls) -> DisconnectCause:
        """No inbound frame within the keepalive deadline."""
        return cls(CauseKind.KEEPALIVE)

    @classmethod
    def protocol(cls, detail: str) -> DisconnectCause:
        """The server's traffic broke protocol.md during a handshake."""
        return cls(CauseKind.PROTOCOL, detail=detail)

    @classmethod
    def server_error(cls, variant_name: str, detail: str = "") -> DisconnectCause:
        """A handshake request was answered by the ``BacktestError`` ``variant_name``."""
        return cls(CauseKind.SERVER_ERROR, detail=detail, variant=variant_name)

    @classmethod
    def create_rejected(cls, detail: str) -> DisconnectCause:
        """``createBacktestSession`` was answered with ``InvalidRequest``."""
        return cls(CauseKind.CREATE_REJECTED, detail=detail)

    @classmethod
    def oversize(cls, detail: str = "") -> DisconnectCause:
        """An inbound frame exceeded ``max_message_size``."""
        return cls(CauseKind.OVERSIZE, detail=detail)

    @classmethod
    def subscribe_rejected(cls, code: int, message: str = "") -> DisconnectCause:
        """A data-plane subscribe was answered with JSON-RPC error ``code``."""
        return cls(CauseKind.SUBSCRIBE_REJECTED, code=code, detail=message)

    def __str__(self) -> str:
        """One readable line, e.g. ``closed with code 1013 (try again later)``."""
        match self.kind:
            case CauseKind.CONNECT_FAILED:
                text = "connect failed"
            case CauseKind.TLS:
                text = "TLS handshake failed"
            case CauseKind.HTTP_STATUS:
                text = f"upgrade refused with HTTP {self.code}"
                with contextlib.suppress(ValueError):
                    text += f" ({http.HTTPStatus(self.code or 0).phrase})"
            case CauseKind.CLOSED:
                if self.code is None:
                    text = "closed without a close code"
                else:
                    text = f"closed with code {self.code}"
                    name = _CLOSE_CODE_NAMES.get(self.code)
                    if name is not None:
                        text += f" ({name})"
            case CauseKind.TIMEOUT:
                return f"timed out waiting for {self.detail or 'the server'}"
            case CauseKind.KEEPALIVE:
                text = "no inbound traffic within the keepalive deadline"
            case CauseKind.PROTOCOL:
                text = "protocol error"
            case CauseKind.SERVER_ERROR:
                text = f"server error {self.variant or 'unknown'}"
            case CauseKind.CREATE_REJECTED:
                text = "session create rejected"
            case CauseKind.OVERSIZE:
                text = "inbound message larger than max_message_size"
            case CauseKind.SUBSCRIBE_REJECTED:
                text = f"subscribe rejected with JSON-RPC error {self.code}"
        if self.detail:
            text += f": {self.detail}"
        return text


def is_final(cause: DisconnectCause) -> bool:
    """Whether reconnecting after ``cause`` is pointless (client.md §3).

    Final: HTTP 401/403 on the upgrade, close codes 1008 and 4404, the server errors
    ``SessionNotFound`` and ``SessionOwnerMismatch``, a rejected create, and a failed TLS
    handshake. The last is our decision (client.md §3 is silent): a certificate that does
    not verify, or a peer that does not speak TLS (``wss://`` to a plain server), is not
    mended by asking again, and twenty attempts only delay the one clear error.
    """
    match cause.kind:
        case CauseKind.HTTP_STATUS:
            return cause.code in _FINAL_HTTP_STATUSES
        case CauseKind.CLOSED:
            return cause.code in _FINAL_CLOSE_CODES
        case CauseKind.SERVER_ERROR:
            return (cause.variant or "").lower() in _FINAL_SERVER_ERRORS
        case CauseKind.CREATE_REJECTED | CauseKind.TLS:
            return True
        case _:
            return False


def is_overload(cause: DisconnectCause) -> bool:
    """Whether ``cause`` asks the client to back off (close 1013 or HTTP 503)."""
    return (cause.kind is CauseKind.CLOSED and cause.code == _OVERLOAD_CLOSE_CODE) or (
        cause.kind is CauseKind.HTTP_STATUS and cause.code == _OVERLOAD_HTTP_STATUS
    )


@final
@attrs.frozen
class Retry:
    """Make reconnect attempt ``attempt`` after sleeping ``delay`` seconds.

    Attributes:
        attempt: Number of the allowed attempt within the failure window (1-based).
        delay: Seconds to wait before it (0 for an immediate attempt).
    """

    attempt: int
    delay: float


@final
@attrs.frozen
class GiveUp:
    """Stop reconnecting; the manager publishes ``Failed(reason)``.

    Attributes:
        reason: One readable line naming the cause (no secrets).
        final: True when the cause itself is final; False when the window's budget
            (attempts or time) ran out.
    """

    reason: str
    final: bool


@final
@attrs.frozen
class ReconnectPolicy:
    """Decides whether and when to reconnect, from numbers only.

    Attributes:
        config: Source of the backoff, jitter and budget settings.
    """

    config: ClientConfig = attrs.field(factory=ClientConfig)

    def backoff(self, attempt: int) -> float:
        """The un-jittered wait before ``attempt``: 0 for attempt 1, then exponential, capped."""
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        if attempt == 1:
            return 0.0
        cfg = self.config
        try:
            raw = cfg.reconnect_initial_backoff * cfg.reconnect_backoff_multiplier ** (attempt - 2)
        except OverflowError:
            raw = math.inf
        return min(raw, cfg.reconnect_max_backoff)

    def delay(self, attempt: int, cause: DisconnectCause, rng: random.Random) -> float:
        """Seconds to wait before ``attempt``.

        Attempt 1 is immediate; attempt n >= 2 waits ``backoff(n) * rng.uniform(1 - j,
        1 + j)``. After an overload cause (`is_overload`) the wait is at least
        ``reconnect_overload_min_delay * rng.uniform(1, 1 + j)``, so clients told to back off
        do not all return at the same instant. ``rng.uniform`` is called once for the
        jitter (not for attempt 1), then once more for an overload floor.
        """
        base = self.backoff(attempt)
        j = self.config.reconnect_jitter
        wait = 0.0 if attempt == 1 else base * rng.uniform(1 - j, 1 + j)
        if is_overload(cause):
            floor = self.config.reconnect_overload_min_delay * rng.uniform(1, 1 + j)
            wait = max(wait, floor)
        return wait

    def gated(self, attempt: int) -> bool:
        """Whether a subscription manager must wait at the coordinator before ``attempt``."""
        return attempt > self.config.reconnect_ungated_attempts

    def decide(
        self, attempt: int, elapsed: float, cause: DisconnectCause, rng: random.Random
    ) -> Retry | GiveUp:
        """Whether to make reconnect ``attempt`` after ``cause``, and when.

        Args:
            attempt: The number the next attempt would have in the failure window.
            elapsed: Seconds since the window opened, time parked excluded.
            cause: Why the connection or the previous attempt ended.
            rng: Random source for the jitter; consulted only for a `Retry`.

        Returns:
            `GiveUp` (final) for a final cause; `GiveUp` (not final) once ``attempt``
            exceeds ``reconnect_max_attempts`` or ``elapsed`` exceeds
            ``reconnect_max_total``; otherwise `Retry`.
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        if is_final(cause):
            return GiveUp(reason=f"{cause} (not retried)", final=True)
        cfg = self.config
        if attempt > cfg.reconnect_max_attempts:
            return GiveUp(
                reason=(
                    f"gave up after {cfg.reconnect_max_attempts} reconnect attempts "
                    f"in {elapsed:.1f} s; last failure: {cause}"
                ),
                final=False,
            )
        if elapsed > cfg.reconnect_max_total:
            return GiveUp(
                reason=(
                    f"gave up after {elapsed:.1f} s of reconnecting "
                    f"(limit {cfg.reconnect_max_total:g} s, {attempt - 1} attempts); "
                    f"last failure: {cause}"
                ),
                final=False,
            )
        return Retry(attempt=attempt, delay=self.delay(attempt, cause, rng))


@final
class FailureWindow:
    """The failure-window bookkeeping a manager owns; it asks `ReconnectPolicy` to decide.

    Time comes in as ``now`` arguments (e.g. ``trio.current_time()``), never read from a
    clock. Call `connected` when a connection is ``Up``; `progressed` whenever that
    connection hands the user something new; `dropped` when an ``Up`` connection is lost;
    `attempt_failed` when a (re)connect attempt fails before ``Up`` (including the very
    first connect); `add_parked` with the seconds an attempt waited at the coordinator.

    A window opens at the first failure ever, and again at a drop of a connection that
    stayed ``Up`` for at least ``reconnect_uptime_reset`` or that made progress (client.md
    §3, revised); opening one resets the attempt count and the parked time, so that drop
    is attempt 1 again. A drop of a connection that was up briefly and brought nothing new
    continues the current window, so a server that accepts and drops at once meets the
    full backoff and exhausts the budget, while a flaky link that moves the session
    forward each time never does. Once a `GiveUp` was returned, every later failure
    returns that same `GiveUp`.
    """

    def __init__(self, policy: ReconnectPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._attempt = 0
        self._window_started: float | None = None
        self._parked = 0.0
        self._up_since: float | None = None
        self._progress = False
        self._gave_up: GiveUp | None = None

    def __repr__(self) -> str:
        return (
            f"<FailureWindow attempt={self._attempt} window_started={self._window_started} "
            f"parked={self._parked} up={self._up_since is not None}>"
        )

    @property
    def attempt(self) -> int:
        """Number of the last attempt allowed in the current window (0: none yet)."""
        return self._attempt

    @property
    def window_started(self) -> float | None:
        """When the current window opened (None before the first failure)."""
        return self._window_started

    @property
    def parked(self) -> float:
        """Seconds parked during the current window."""
        return self._parked

    @property
    def is_up(self) -> bool:
        """Whether `connected` was called since the last failure."""
        return self._up_since is not None

    @property
    def gave_up(self) -> GiveUp | None:
        """The `GiveUp` returned, if any."""
        return self._gave_up

    def elapsed(self, now: float) -> float:
        """Seconds since the window opened, time parked excluded (0 without a window)."""
        if self._window_started is None:
            return 0.0
        return max(0.0, now - self._window_started - self._parked)

    def connected(self, now: float) -> None:
        """Record that a connection is ``Up`` at ``now``."""
        if self._gave_up is not None:
            raise RuntimeError("connected() after the failure window gave up")
        self._up_since = now
        self._progress = False

    def progressed(self) -> None:
        """The ``Up`` connection handed the user something new (ignored when not ``Up``).

        Something new: a control event above the high-water mark, a notification not
        seen before. The connection's drop will open a new failure window.
        """
        if self._up_since is not None:
            self._progress = True

    def ended_cleanly(self) -> None:
        """The server ended the ``Up`` connection on purpose; it was no failure of the link.

        Like progress, its drop opens a new failure window. For a manager that paces its
        reconnects after such an end (the data plane waits ``drain_timeout`` for
        ``Completed`` after a close 1000), so it is no storm.
        """
        self.progressed()

    @property
    def made_progress(self) -> bool:
        """Whether the ``Up`` connection has handed the user something new."""
        return self._up_since is not None and self._progress

    def dropped(self, now: float, cause: DisconnectCause) -> Retry | GiveUp:
        """Record that the ``Up`` connection was lost at ``now``; decide the next attempt.

        If no connection is ``Up`` this is the same as `attempt_failed`. A connection that
        made progress, or stayed up for ``reconnect_uptime_reset``, ends the window: the
        next attempt is attempt 1 of a new one.
        """
        if self._up_since is not None and (
            self._progress or now - self._up_since >= self._policy.config.reconnect_uptime_reset
        ):
            self._open_window(now)
        return self._failed(now, cause)

    def attempt_failed(self, now: float, cause: DisconnectCause) -> Retry | GiveUp:
        """Record that a connect attempt failed at ``now``; decide the next attempt."""
        return self._failed(now, cause)

    def add_parked(self, seconds: float) -> None:
        """Exclude ``seconds`` spent parked at the coordinator from the window's time."""
        if not seconds >= 0:
            raise ValueError(f"parked time must be >= 0 seconds, got {seconds!r}")
        if self._window_started is not None:
            self._parked += seconds

    def _open_window(self, now: float) -> None:
        self._window_started = now
        self._attempt = 0
        self._parked = 0.0

    def _failed(self, now: float, cause: DisconnectCause) -> Retry | GiveUp:
        # ``_progress`` needs no reset: it is read only while up, and `connected` resets it.
        self._up_since = None
        if self._gave_up is not None:
            return self._gave_up
        if self._window_started is None:
            self._open_window(now)
        decision = self._policy.decide(self._attempt + 1, self.elapsed(now), cause, self._rng)
        if isinstance(decision, Retry):
            self._attempt = decision.attempt
        else:
            self._gave_up = decision
        return decision
