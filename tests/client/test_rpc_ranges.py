"""`available_ranges` against a scripted control host (``httpx.MockTransport``)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import SECRET_KEY
from trio_backtest import AvailableRange, ClientConfig, ManagedSessionError, ProtocolError
from trio_backtest import available_ranges as fetch
from trio_backtest._ranges import ranges_url

Handler = Callable[[httpx.Request], httpx.Response]


def recording(response: httpx.Response, seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("control", "listing"),
    [
        ("wss://sim.example/backtest", "https://sim.example/available-ranges"),
        ("ws://127.0.0.1:8900/backtest/", "http://127.0.0.1:8900/available-ranges"),
        ("wss://sim.example/v2/backtest?x=1", "https://sim.example/v2/available-ranges"),
        ("wss://sim.example", "https://sim.example/available-ranges"),
    ],
)
def test_the_listing_lives_on_the_control_host(control: str, listing: str) -> None:
    assert ranges_url(control) == listing


async def test_ranges_are_read_in_either_spelling_with_unknown_keys_kept() -> None:
    seen: list[httpx.Request] = []
    body = [
        {"bundleStartSlot": 1_000, "maxBundleEndSlot": 1_999, "snapshotSlot": 990, "region": "eu"},
        {"bundle_start_slot": 2_000, "max_bundle_end_slot": 2_499, "snapshot_slot": 1_990},
    ]
    transport = recording(httpx.Response(200, json=body), seen)
    ranges = await fetch("wss://sim.example/backtest", SECRET_KEY, transport=transport)
    assert ranges == [
        AvailableRange(1_000, 1_999, 990, extra={"region": "eu"}),
        AvailableRange(2_000, 2_499, 1_990),
    ]
    (request,) = seen
    assert request.method == "GET"
    assert str(request.url) == "https://sim.example/available-ranges"
    assert request.headers["x-api-key"] == SECRET_KEY
    assert SECRET_KEY not in repr(ranges)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_one_clear_error_without_the_key(status: int) -> None:
    transport = recording(httpx.Response(status, text="no"), [])
    with pytest.raises(
        ManagedSessionError, match=f"refused the API key \\(HTTP {status}\\)"
    ) as info:
        await fetch("wss://sim.example/backtest", SECRET_KEY, transport=transport)
    assert SECRET_KEY not in str(info.value)


@pytest.mark.parametrize(
    ("response", "error", "fragment"),
    [
        (httpx.Response(500, text="boom"), ManagedSessionError, "answered HTTP 500"),
        (httpx.Response(200, text="<html>"), ProtocolError, "not JSON"),
        (httpx.Response(200, json={"ranges": []}), ProtocolError, "must be a JSON array"),
        (httpx.Response(200, json=[7]), ProtocolError, "item 0 must be an object"),
        (
            httpx.Response(200, json=[{"bundleStartSlot": 1, "maxBundleEndSlot": 2}]),
            ProtocolError,
            "item 0: snapshotSlot must be a slot, got nothing",
        ),
        (
            httpx.Response(
                200, json=[{"bundleStartSlot": "1", "maxBundleEndSlot": 2, "snapshotSlot": 0}]
            ),
            ProtocolError,
            "bundleStartSlot must be a slot, got '1'",
        ),
        (
            httpx.Response(
                200, json=[{"bundleStartSlot": -1, "maxBundleEndSlot": 2, "snapshotSlot": 0}]
            ),
            ProtocolError,
            "bundleStartSlot must be a slot, got -1",
        ),
    ],
)
async def test_bad_answers_are_clear_errors(
    response: httpx.Response, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        await fetch("wss://sim.example/backtest", SECRET_KEY, transport=recording(response, []))


async def test_an_unreachable_host_is_one_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(ManagedSessionError, match=r"cannot reach https://sim\.example/available"):
        await fetch(
            "wss://sim.example/backtest", SECRET_KEY, transport=httpx.MockTransport(handler)
        )


async def test_no_key_in_clear_text_to_another_machine() -> None:
    seen: list[httpx.Request] = []
    transport = recording(httpx.Response(200, json=[]), seen)
    with pytest.raises(ValueError, match="unencrypted"):
        await fetch("ws://sim.example/backtest", SECRET_KEY, transport=transport)
    assert seen == []
    allowed = ClientConfig(allow_insecure=True)
    assert (
        await fetch("ws://sim.example/backtest", SECRET_KEY, config=allowed, transport=transport)
        == []
    )
    assert str(seen[0].url) == "http://sim.example/available-ranges"


async def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        await fetch("https://sim.example/backtest", SECRET_KEY)


async def test_the_local_server_lists_its_bundles() -> None:
    from trio_backtest.server import open_local_server

    async with open_local_server(api_keys=(SECRET_KEY,), bundle_size=50) as srv:
        ranges = await fetch(srv.url, SECRET_KEY)
        with pytest.raises(ManagedSessionError, match=r"refused the API key \(HTTP 401\)"):
            await fetch(srv.url, "not-the-key")
    assert len(ranges) == 100  # the local server's default listing
    assert ranges[:2] == [AvailableRange(0, 49, 0), AvailableRange(50, 99, 50)]
    assert ranges[-1] == AvailableRange(4_950, 4_999, 4_950)
