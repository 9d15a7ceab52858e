"""Which connector a `ClientConfig` picks when the caller passes none."""

from __future__ import annotations

from ._config import ClientConfig
from ._transport import Connector, websocket_connector

__all__ = ["default_connector"]


def default_connector(config: ClientConfig) -> Connector:
    """The TCP/TLS connector of ``config.transport``.

    Raises:
        ImportError: ``transport="websockets"`` without the websockets package.
    """
    if config.transport == "websockets":
        # Imported here so that websockets stays an optional dependency.
        from ._websockets import websockets_connector

        return websockets_connector
    return websocket_connector
