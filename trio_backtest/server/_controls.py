"""Live fault controls of a running server (``server.faults``) and random chaos."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from typing import Literal, final

import attrs
import trio

from ._config import ChaosConfig, Plane
from ._faults import FaultStream, Link
from ._stats import Counters

__all__ = ["ConnHandle", "FaultControls", "HttpFault"]

HttpFault = Literal["drop", "lose_answer", "bad_gateway"]
"""What an HTTP fault does to one JSON-RPC request (see :meth:`FaultControls.http`)."""

logger = logging.getLogger("trio_backtest.server.faults")

_PLANES = ("control", "data", "any")


def _check_plane(plane: str) -> None:
    if plane not in _PLANES:
        raise ValueError(f"plane must be one of {_PLANES}, got {plane!r}")


@final
class ConnHandle:
    """The server's grip on one accepted WebSocket connection, for faults and shutdown."""

    def __init__(
        self,
        number: int,
        plane: Literal["control", "data"],
        stream: FaultStream,
        nursery: trio.Nursery,
        close: Callable[[int, str], None],
    ) -> None:
        self.number = number
        self.plane = plane
        self.stream = stream
        self.nursery = nursery
        self.session_ids: frozenset[str] = frozenset()
        """Sessions the socket belongs to (a parallel control socket: the batch and all its
        sub-sessions)."""
        self.on_drop: Callable[[], None] | None = None
        """Called when the server itself drops the connection, which it knows at once."""
        self._close = close

    def matches(self, plane: Plane, session_id: str | None) -> bool:
        """Whether a fault aimed at ``plane`` / ``session_id`` hits this socket."""
        if plane != "any" and plane != self.plane:
            return False
        return session_id is None or session_id in self.session_ids

    def close(self, code: int, reason: str = "") -> None:
        """Start a WebSocket close with ``code`` (returns at once)."""
        self._close(code, reason)

    def drop(self) -> None:
        """Lose the connection abruptly."""
        self.stream.drop()
        if self.on_drop is not None:
            self.on_drop()


@final
@attrs.define
class _DropRule:
    plane: Plane
    session_id: str | None
    remaining: int


@final
@attrs.define
class _HttpRule:
    drop: float
    lose_answer: float
    bad_gateway: float
    delay: float
    rng: random.Random


@final
@attrs.define
class _Refusal:
    plane: Plane
    remaining: int
    status: int


@final
class FaultControls:
    """Faults to apply to a running server, effective immediately; every method is synchronous.

    ``plane`` is ``"control"``, ``"data"`` or ``"any"``; ``session_id=None`` means every
    session (a parallel control socket matches its batch id and every sub-session id).
    """

    def __init__(self, counters: Counters, chaos: ChaosConfig | None = None) -> None:
        self._counters = counters
        self._conns: dict[int, ConnHandle] = {}
        self._drop_rules: list[_DropRule] = []
        self._refusals: list[_Refusal] = []
        self._stall: float = 0.0
        self._stall_count: int | None = None
        self._link: Link | None = None
        self._failures: dict[str, str] = {}
        self.chaos = chaos
        """The random faults in effect (``None``: none); `clear` turns them off."""
        self._chaos_rng = random.Random(chaos.seed if chaos is not None else 0)
        self._http_rules: dict[str | None, _HttpRule] = {}
        if chaos is not None and chaos.http_active:
            self.http(
                drop=chaos.http_drop,
                lose_answer=chaos.http_lose_answer,
                bad_gateway=chaos.http_bad_gateway,
                delay=chaos.http_delay,
                seed=chaos.seed,
            )

    # ------------------------------------------------------------ public controls

    def drop(
        self, plane: Plane, *, session_id: str | None = None, after_messages: int | None = None
    ) -> int:
        """Lose matching sockets abruptly (no close frame), now or after N more server messages.

        With ``after_messages``, the rule also covers matching sockets opened later; it fires
        once, right after the server wrote the N-th message on any matching socket, and then
        drops every matching socket.

        Returns:
            How many sockets were dropped now (0 when the drop is deferred).
        """
        _check_plane(plane)
        if after_messages is not None:
            if after_messages < 0:
                raise ValueError("after_messages must be >= 0")
            if after_messages > 0:
                self._drop_rules.append(_DropRule(plane, session_id, after_messages))
                return 0
        return self._drop_now(plane, session_id, "drop")

    def close(
        self, plane: Plane, code: int, *, session_id: str | None = None, reason: str = ""
    ) -> int:
        """Close matching sockets with a WebSocket close frame carrying ``code``.

        Returns:
            How many sockets are being closed.
        """
        _check_plane(plane)
        if not 1000 <= code <= 4999 or code in (1005, 1006, 1015):
            raise ValueError(f"{code} is not a close code that can be sent")
        hits = self._matching(plane, session_id)
        for conn in hits:
            logger.info("fault: closing connection %d with %d", conn.number, code)
            conn.close(code, reason)
        self._fired("close", len(hits))
        return len(hits)

    def black_hole(
        self, plane: Plane, *, session_id: str | None = None, duration: float | None = None
    ) -> int:
        """Keep matching sockets open but pass nothing either way (no pongs either).

        Returns:
            How many sockets were black-holed.
        """
        _check_plane(plane)
        hits = self._matching(plane, session_id)
        for conn in hits:
            conn.stream.black_hole(duration)
        self._fired("black_hole", len(hits))
        return len(hits)

    def refuse_upgrades(self, count: int, status: int = 503, *, plane: Plane = "any") -> None:
        """Reject the next ``count`` WebSocket upgrades on ``plane`` with HTTP ``status``."""
        _check_plane(plane)
        if count < 0:
            raise ValueError("count must be >= 0")
        if not 300 <= status <= 599:
            raise ValueError("status must be an HTTP error status (300-599)")
        if count:
            self._refusals.append(_Refusal(plane, count, status))

    def stall_startup(self, seconds: float, *, count: int | None = None) -> None:
        """Hold the start-up of the next creates for ``seconds`` (``status`` keeps coming).

        Applies to every following create until ``stall_startup(0)``, or to the next
        ``count`` creates only.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        self._stall = float(seconds)
        self._stall_count = count

    def set_link(self, link: Link | None) -> None:
        """Route every connection accepted from now on through ``link`` (``None``: no shaping).

        A connector's own ``link`` takes precedence for its connections.
        """
        self._link = link

    @property
    def link(self) -> Link | None:
        """The link new connections get."""
        return self._link

    def fail_session(self, session_id: str, error: str = "injected failure") -> None:
        """Make a session fail at its next slot boundary with ``AdvanceSlotFailed``."""
        self._failures[session_id] = error

    def http(
        self,
        *,
        drop: float = 0.0,
        lose_answer: float = 0.0,
        bad_gateway: float = 0.0,
        delay: float = 0.0,
        seed: int = 0,
        session_id: str | None = None,
    ) -> None:
        """Faults on the HTTP JSON-RPC data plane, from now on, seeded.

        One draw per request decides its fate, so the probabilities add up to at most 1.
        A rule for one ``session_id`` replaces that session's previous rule and takes
        precedence over the rule for every session (``session_id=None``).

        Args:
            drop: Probability the connection is dropped before the request is handled.
            lose_answer: Probability the request *is* handled, then the connection is
                dropped without an answer (what a client's ``send_transaction`` must survive).
            bad_gateway: Probability of HTTP 502 with an empty body; the request is not handled.
            delay: Seconds added before each request is handled and answered.
            seed: Seed of this rule's random draws.
            session_id: The session the rule applies to; ``None`` for every session.
        """
        for name, value in (
            ("drop", drop),
            ("lose_answer", lose_answer),
            ("bad_gateway", bad_gateway),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if drop + lose_answer + bad_gateway > 1.0:
            raise ValueError("drop + lose_answer + bad_gateway must not exceed 1")
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError("delay must be a finite number of seconds >= 0")
        self._http_rules[session_id] = _HttpRule(
            drop, lose_answer, bad_gateway, float(delay), random.Random(f"http:{seed}")
        )

    def take_http(self, session_id: str) -> tuple[HttpFault | None, float]:
        """The fault and the delay for one JSON-RPC request to ``session_id``."""
        rule = self._http_rules.get(session_id) or self._http_rules.get(None)
        if rule is None:
            return None, 0.0
        draw = rule.rng.random()
        fault: HttpFault | None = None
        if draw < rule.drop:
            fault = "drop"
        elif draw < rule.drop + rule.lose_answer:
            fault = "lose_answer"
        elif draw < rule.drop + rule.lose_answer + rule.bad_gateway:
            fault = "bad_gateway"
        if fault is not None:
            self._fired(f"http_{fault}", 1)
        return fault, rule.delay

    def clear(self) -> None:
        """Forget pending deferred drops, refusals, stalls, HTTP faults and chaos (the link
        stays)."""
        self._http_rules.clear()
        self._drop_rules.clear()
        self._refusals.clear()
        self._stall = 0.0
        self._stall_count = None
        self._failures.clear()
        self.chaos = None

    # ------------------------------------------------------------ hooks for the server

    def register(self, conn: ConnHandle) -> None:
        """Track a newly accepted connection."""
        self._conns[conn.number] = conn

    def unregister(self, conn: ConnHandle) -> None:
        """Stop tracking a finished connection."""
        self._conns.pop(conn.number, None)

    def live(self) -> Iterable[ConnHandle]:
        """The tracked connections."""
        return list(self._conns.values())

    def take_refusal(self, plane: Literal["control", "data"]) -> int | None:
        """The HTTP status to refuse this upgrade with, if a refusal is pending."""
        for rule in self._refusals:
            if rule.plane in ("any", plane):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._refusals.remove(rule)
                self._fired("refuse", 1)
                return rule.status
        return None

    def take_stall(self) -> float:
        """The start-up stall for a create starting now."""
        if self._stall <= 0 or self._stall_count == 0:
            return 0.0
        if self._stall_count is not None:
            self._stall_count -= 1
        self._fired("stall", 1)
        return self._stall

    def take_failure(self, session_id: str) -> str | None:
        """The injected failure for ``session_id``, once."""
        error = self._failures.pop(session_id, None)
        if error is not None:
            self._fired("fail_session", 1)
        return error

    def after_send(self, conn: ConnHandle) -> None:
        """Called right after the server wrote a message on ``conn``."""
        for rule in list(self._drop_rules):
            if conn.matches(rule.plane, rule.session_id):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._drop_rules.remove(rule)
                    self._drop_now(rule.plane, rule.session_id, "drop")
        chaos = self.chaos
        if chaos is None or not conn.matches(chaos.plane, None) or conn.stream.dropped:
            return
        if chaos.drop_probability and self._chaos_rng.random() < chaos.drop_probability:
            logger.info("chaos: dropping connection %d", conn.number)
            conn.drop()
            self._fired("chaos_drop", 1)
        elif chaos.close_probability and self._chaos_rng.random() < chaos.close_probability:
            code = self._chaos_rng.choice(chaos.close_codes)
            logger.info("chaos: closing connection %d with %d", conn.number, code)
            conn.close(code, "chaos")
            self._fired("chaos_close", 1)

    async def run_chaos(self) -> None:
        """Fire interval faults forever (returns at once without ``mean_interval``)."""
        chaos = self.chaos
        if chaos is None or chaos.mean_interval is None:
            return
        rng = random.Random(f"{chaos.seed}:interval")
        while True:
            await trio.sleep(rng.expovariate(1.0 / chaos.mean_interval))
            targets = [c for c in self.live() if c.matches(chaos.plane, None)]
            if not targets:
                continue
            target = rng.choice(sorted(targets, key=lambda c: c.number))
            if rng.random() < 0.5:
                logger.info("chaos: dropping connection %d", target.number)
                target.drop()
                self._fired("chaos_drop", 1)
            else:
                code = rng.choice(chaos.close_codes)
                logger.info("chaos: closing connection %d with %d", target.number, code)
                target.close(code, "chaos")
                self._fired("chaos_close", 1)

    # ------------------------------------------------------------ internals

    def _matching(self, plane: Plane, session_id: str | None) -> list[ConnHandle]:
        return [conn for conn in self._conns.values() if conn.matches(plane, session_id)]

    def _drop_now(self, plane: Plane, session_id: str | None, kind: str) -> int:
        hits = self._matching(plane, session_id)
        for conn in hits:
            logger.info("fault: dropping connection %d", conn.number)
            conn.drop()
        self._fired(kind, len(hits))
        return len(hits)

    def _fired(self, kind: str, count: int) -> None:
        if count:
            self._counters.faults_fired[kind] += count
