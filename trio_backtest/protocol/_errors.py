"""The one exception the protocol layer raises."""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(ValueError):
    """Traffic that breaks ``protocol.md``: not JSON, wrong types or missing keys.

    Attributes:
        method: The message's method when it could be read, else ``None``.
        rpc_id: The JSON-RPC request id when it could be read, so a server can answer
            the request with an error instead of dropping it.
    """

    def __init__(
        self, message: str, *, method: str | None = None, rpc_id: int | str | None = None
    ) -> None:
        super().__init__(message)
        self.method = method
        self.rpc_id = rpc_id
