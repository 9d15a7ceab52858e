"""What the server counts, and the frozen snapshots :meth:`LocalServer.statistics` returns."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import Literal, final

import attrs

__all__ = ["Counters", "Delivery", "Record", "RpcCall", "ServerStatistics"]


def _headers(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


def _frozen_mapping(value: Mapping[str, int]) -> Mapping[str, int]:
    return dict(sorted(value.items()))


@final
@attrs.frozen
class ServerStatistics:
    """A snapshot of the server's counters."""

    sessions_by_state: Mapping[str, int] = attrs.field(converter=_frozen_mapping)
    """Live sessions by state (``starting``, ``ready``, ``running``, ``completed``,
    ``failed``); a parallel batch counts each sub-session."""
    sessions_detached: int
    """Live resumable sessions whose control socket is gone."""
    sessions_created: int
    """Sessions ever created (each sub-session of a batch counts)."""
    sessions_closed: int
    """Sessions ended by a close request."""
    sessions_expired: int
    """Sessions forgotten after ``disconnectTimeoutSecs`` without a re-attach."""
    sessions_destroyed: int
    """Non-resumable sessions ended because their control socket dropped."""
    connections_open: Mapping[str, int] = attrs.field(converter=_frozen_mapping)
    """Open WebSocket connections by plane (``control``, ``data``)."""
    connections_accepted: int
    """WebSocket upgrades accepted since start."""
    upgrades_refused: Mapping[str, int] = attrs.field(converter=_frozen_mapping)
    """Refused upgrades by HTTP status (as a string: ``"401"``, ``"404"``, ``"503"``)."""
    health_checks: int
    """``GET /health`` requests answered."""
    rpc_requests: int
    """HTTP JSON-RPC requests received on session paths."""
    messages_sent: int
    """WebSocket messages written to clients."""
    messages_received: int
    """WebSocket messages read from clients."""
    bytes_sent: int
    """Payload bytes of the messages sent (after compression)."""
    bytes_received: int
    """Payload bytes of the messages received."""
    notifications_sent: int
    """Data-plane notifications written, replays included."""
    notifications_dropped: int
    """Notifications dropped by back-pressure policy ``drop``."""
    replays_served: int
    """Subscriptions served with ``replayFromSlot``."""
    replay_window_errors: int
    """Subscriptions refused with ``-32010``."""
    protocol_errors: int
    """Malformed or unexpected frames answered with an error."""
    faults_fired: Mapping[str, int] = attrs.field(converter=_frozen_mapping)
    """Faults applied, by kind (``drop``, ``close``, ``black_hole``, ``refuse``, ``stall``,
    ``fail_session``, ``chaos_drop``, ``chaos_close``, ``http_drop``, ``http_lose_answer``,
    ``http_bad_gateway``)."""


@final
@attrs.define
class Counters:
    """The server's mutable counters (one instance per server)."""

    sessions_created: int = 0
    sessions_closed: int = 0
    sessions_expired: int = 0
    sessions_destroyed: int = 0
    connections_open: Counter[str] = attrs.Factory(Counter)
    connections_accepted: int = 0
    upgrades_refused: Counter[str] = attrs.Factory(Counter)
    health_checks: int = 0
    rpc_requests: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    notifications_sent: int = 0
    notifications_dropped: int = 0
    replays_served: int = 0
    replay_window_errors: int = 0
    protocol_errors: int = 0
    faults_fired: Counter[str] = attrs.Factory(Counter)

    def sent(self, frame: str | bytes) -> None:
        """Count one message written to a client."""
        self.messages_sent += 1
        self.bytes_sent += len(frame.encode() if isinstance(frame, str) else frame)

    def received(self, frame: str | bytes) -> None:
        """Count one message read from a client."""
        self.messages_received += 1
        self.bytes_received += len(frame.encode() if isinstance(frame, str) else frame)

    def snapshot(self, by_state: Mapping[str, int], detached: int) -> ServerStatistics:
        """Freeze the counters together with the live session census."""
        return ServerStatistics(
            sessions_by_state=by_state,
            sessions_detached=detached,
            sessions_created=self.sessions_created,
            sessions_closed=self.sessions_closed,
            sessions_expired=self.sessions_expired,
            sessions_destroyed=self.sessions_destroyed,
            connections_open=+self.connections_open,
            connections_accepted=self.connections_accepted,
            upgrades_refused=dict(self.upgrades_refused),
            health_checks=self.health_checks,
            rpc_requests=self.rpc_requests,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            notifications_sent=self.notifications_sent,
            notifications_dropped=self.notifications_dropped,
            replays_served=self.replays_served,
            replay_window_errors=self.replay_window_errors,
            protocol_errors=self.protocol_errors,
            faults_fired=dict(self.faults_fired),
        )


@final
@attrs.frozen
class Delivery:
    """One frame the server wrote, as the server's own record of a session."""

    plane: Literal["control", "data"]
    """The kind of socket the frame went out on."""
    connection: int
    """The server's number for the socket (increasing from 1 per server)."""
    method: str | None
    """The message's method (``None`` for a JSON-RPC answer)."""
    frame: str | bytes = attrs.field(repr=False)
    """Exactly what was sent (zstd-compressed bytes for compressed notifications)."""
    seq_id: int | None = None
    """The ``seqId`` of a sequenced control message."""
    slot: int | None = None
    """The slot of a notification or a ``slotNotification``."""
    subscription: int | None = None
    """The subscription of a notification."""
    replay: bool = False
    """Whether the frame re-sent something (a control replay after attach, or a
    ``replayFromSlot`` notification)."""


Record = deque[Delivery]
"""A session's delivery record: the newest ``record_limit`` frames, in write order."""


@final
@attrs.frozen
class RpcCall:
    """One HTTP JSON-RPC request to a session's data-plane path, as the server saw it."""

    method: str | None
    """The JSON-RPC method (``None`` for a batch or a body that is no request)."""
    headers: Mapping[str, str] = attrs.field(converter=_headers)
    """The request headers, names lower-case, as received."""
    status: int
    """The HTTP status answered; 0 when no answer was sent."""
    fault: str | None = None
    """The HTTP fault that hit the request (``drop``, ``lose_answer``, ``bad_gateway``)."""
