"""`available_ranges`: which slots a backtest service can replay (protocol.md §6).

``GET /available-ranges`` on the control host, with the API key; the same transport
rule as the control socket (no key in clear text to another machine).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any, Final, final

import attrs
import httpx
import orjson

from ._config import ClientConfig
from ._errors import ManagedSessionError
from ._rpc import default_ssl_context
from ._transport import check_transport_security, display_url
from .protocol import ProtocolError

__all__ = ["AvailableRange", "available_ranges", "parse_available_ranges", "ranges_url"]

_FIELDS: Final = {
    "bundle_start_slot": "bundleStartSlot",
    "max_bundle_end_slot": "maxBundleEndSlot",
    "snapshot_slot": "snapshotSlot",
}


def _extra(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else dict(value)


@final
@attrs.frozen
class AvailableRange:
    """A span of slots the service can backtest, as one bundle range."""

    bundle_start_slot: int
    """First slot of the range's first bundle."""
    max_bundle_end_slot: int
    """Last slot a session starting in this range may run to."""
    snapshot_slot: int
    """The slot of the snapshot the range's state starts from."""
    extra: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, converter=_extra)
    """Keys this library does not know, as the server sent them."""


def ranges_url(control_url: str) -> str:
    """The ranges listing of a control URL: ``wss://h/backtest`` → ``https://h/available-ranges``."""
    parts = urllib.parse.urlsplit(control_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/backtest")
    return urllib.parse.urlunsplit((scheme, parts.netloc, f"{path}/available-ranges", "", ""))


def _slot(item: Mapping[str, Any], field: str, index: int) -> int:
    camel = _FIELDS[field]
    value = item.get(camel, item.get(field))
    if type(value) is not int or value < 0:
        shown = "nothing" if value is None else f"{value!r:.40}"
        raise ProtocolError(f"available-ranges: item {index}: {camel} must be a slot, got {shown}")
    return value


def parse_available_ranges(body: bytes) -> list[AvailableRange]:
    """Decode the listing: a JSON array of objects, camelCase or snake_case keys.

    Raises:
        ProtocolError: not JSON, not an array of objects, or a slot missing or mistyped.
    """
    try:
        listing = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError("available-ranges: the answer is not JSON") from None
    if not isinstance(listing, list):
        raise ProtocolError("available-ranges: the answer must be a JSON array")
    known = {*_FIELDS, *_FIELDS.values()}
    ranges = []
    for index, item in enumerate(listing):
        if not isinstance(item, dict):
            raise ProtocolError(f"available-ranges: item {index} must be an object")
        slots = {field: _slot(item, field, index) for field in _FIELDS}
        extra = {k: v for k, v in item.items() if k not in known}
        ranges.append(AvailableRange(**slots, extra=extra))
    return ranges


async def available_ranges(
    url: str,
    api_key: str,
    *,
    config: ClientConfig | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[AvailableRange]:
    """The slot ranges the service at control URL ``url`` can backtest.

    Args:
        url: The control endpoint, e.g. ``wss://host/backtest``.
        api_key: Sent in the ``X-API-Key`` header, and nowhere else.
        config: TLS settings (``ssl_context``, ``allow_insecure``) and timeouts
            (``connect_timeout``, then ``handshake_response_timeout`` for the answer).
        transport: Replaces the network (tests: ``httpx.MockTransport``).

    Raises:
        ValueError: a bad URL, or an API key that would travel unencrypted.
        ManagedSessionError: the service cannot be reached, refuses the key
            (HTTP 401/403) or answers another error status.
        ProtocolError: the answer is not a listing of ranges.
    """
    config = config or ClientConfig()
    check_transport_security(url, config)
    target = ranges_url(url)
    shown = display_url(target)
    timeout = httpx.Timeout(config.handshake_response_timeout, connect=config.connect_timeout)
    async with httpx.AsyncClient(
        transport=transport,
        verify=config.ssl_context or default_ssl_context(),
        timeout=timeout,
        trust_env=False,
    ) as client:
        try:
            response = await client.get(
                target, headers={"x-api-key": api_key, "accept": "application/json"}
            )
        except httpx.TimeoutException:
            raise ManagedSessionError(f"{shown} did not answer in time") from None
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ManagedSessionError(f"cannot reach {shown}: {reason[:200]}") from None
    if response.status_code in (401, 403):
        raise ManagedSessionError(f"{shown} refused the API key (HTTP {response.status_code})")
    if response.status_code != 200:
        raise ManagedSessionError(f"{shown} answered HTTP {response.status_code}")
    return parse_available_ranges(response.content)
