"""`SessionRpc`: a session's JSON-RPC over HTTP (dataplane.md §2, protocol.md §6).

Requests are built with ``solders.rpc.requests`` and answers parsed with
``solders.rpc.responses``; only the simulator's own ``modifyAccounts`` is encoded here
(by the protocol codec, as the ``AccountData`` of a continue). What an answer means —
a result, a JSON-RPC error, a lost answer worth retrying, a session that is gone — is
decided by the plain function `interpret_answer`; `SessionRpc` only moves bytes, waits
and retries.

The API key never comes here: the data plane's URL (the session id) is its secret.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final, Protocol, TypeVar, cast, final

import attrs
import httpx
import orjson
import trio
from solders.account import Account
from solders.account_decoder import UiAccountEncoding
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.config import (
    RpcAccountInfoConfig,
    RpcProgramAccountsConfig,
    RpcSendTransactionConfig,
    RpcSignatureStatusConfig,
    RpcSimulateTransactionConfig,
    RpcTransactionConfig,
)
from solders.rpc.requests import (
    GetAccountInfo,
    GetBalance,
    GetLatestBlockhash,
    GetMultipleAccounts,
    GetProgramAccounts,
    GetSignatureStatuses,
    GetSlot,
    GetTransaction,
    SendRawTransaction,
    SimulateLegacyTransaction,
    SimulateVersionedTransaction,
)
from solders.rpc.responses import (
    GetAccountInfoResp,
    GetBalanceResp,
    GetLatestBlockhashResp,
    GetMultipleAccountsResp,
    GetProgramAccountsResp,
    GetSignatureStatusesResp,
    GetSlotResp,
    GetTransactionResp,
    RpcSimulateTransactionResult,
    SendTransactionResp,
    SimulateTransactionResp,
)
from solders.signature import Signature
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_status import (
    EncodedConfirmedTransactionWithStatusMeta,
    TransactionStatus,
    UiTransactionEncoding,
)

from ._config import ClientConfig
from ._errors import ManagedSessionError
from ._plumbing import Completion
from .protocol import AccountData, Continue, ContinueParams, ProtocolError, encode_control

__all__ = [
    "RPC_ATTEMPTS",
    "RPC_MAX_CONNECTIONS",
    "RPC_REQUEST_TIMEOUT",
    "RPC_RETRY_STEP",
    "Address",
    "AnyTransaction",
    "RpcError",
    "RpcUnavailableError",
    "SessionRpc",
    "default_ssl_context",
    "http_endpoint",
    "interpret_answer",
    "open_session_rpc",
]

logger = logging.getLogger("trio_backtest.rpc")

RPC_ATTEMPTS: Final = 5
"""Tries of an idempotent call (reads, ``modifyAccounts``) before giving up."""
RPC_RETRY_STEP: Final = 0.3
"""Seconds; after failed try ``n`` the next one waits ``n * RPC_RETRY_STEP``."""
RPC_REQUEST_TIMEOUT: Final = 30.0
"""Seconds one try may take (waiting for a pooled connection included) before it counts
as a lost answer."""
RPC_MAX_CONNECTIONS: Final = 32
"""HTTP connections one session's pool keeps open at most; further calls wait their turn."""

#: HTTP statuses that say "try again": the hosted service answers 502 (often with an
#: empty body) intermittently under load and for a session that is gone.
RETRYABLE_STATUSES: Final = frozenset({502, 503, 504})
#: Methods that change the session: a lost answer is never blindly retried. (``call``
#: treats every other method as a read; ``modifyAccounts`` sets absolute states, so a
#: repeat is harmless.)
NOT_IDEMPOTENT: Final = frozenset({"sendTransaction", "requestAirdrop"})

Address = Pubkey | str
"""An account or program address: a solders ``Pubkey`` or its base58 text."""
AnyTransaction = VersionedTransaction | Transaction | str
"""A signed transaction: solders ``VersionedTransaction`` or ``Transaction``, or base64 text."""

R = TypeVar("R", bound="_SoldersResponse")


class RpcError(ManagedSessionError):
    """The data plane answered a call with a JSON-RPC error.

    Attributes:
        code: The JSON-RPC error code, e.g. ``-32002`` for a failed preflight.
        message: The server's message.
        data: The error's ``data`` as JSON (``None`` when absent).
        method: The JSON-RPC method that was called.
    """

    def __init__(self, code: int, message: str, data: Any = None, *, method: str = "") -> None:
        super().__init__(f"{method or 'call'}: JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data
        self.method = method


class RpcUnavailableError(ManagedSessionError):
    """No usable answer: the session is gone (completed, closed, unknown) or the data
    plane did not answer after the retries.

    Attributes:
        signature: For ``send_transaction``, the transaction's signature, so its fate
            can be looked up later; ``None`` otherwise.
    """

    def __init__(self, message: str, *, signature: Signature | None = None) -> None:
        super().__init__(message)
        self.signature = signature


def http_endpoint(rpc_endpoint: str) -> str:
    """The HTTP URL of a data plane: ``ws``→``http``, ``wss``→``https``.

    Raises:
        ValueError: not a ``ws(s)://`` or ``http(s)://`` URL with a host.
    """
    parts = urllib.parse.urlsplit(rpc_endpoint)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the data plane's address is not a ws(s):// URL with a host")
    return urllib.parse.urlunsplit(parts._replace(scheme=scheme, fragment=""))


# ---------------------------------------------------------------- what an answer means


@final
@attrs.frozen
class Answer:
    """A JSON-RPC result."""

    envelope: Mapping[str, Any]
    """The decoded response object."""
    body: bytes = attrs.field(repr=False)
    """The response as it came, for solders to parse."""

    @property
    def result(self) -> Any:
        """The raw JSON ``result``."""
        return self.envelope.get("result")


@final
@attrs.frozen
class Lost:
    """No answer came back; another try may get one."""

    reason: str
    sent: bool
    """Whether the request may have reached the server (so it may have acted on it)."""


@final
@attrs.frozen
class Gone:
    """The session's data plane no longer exists; no retry can help."""

    reason: str


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def interpret_answer(
    status: int, body: bytes, *, method: str, request_id: int
) -> Answer | Lost | Gone:
    """What one HTTP answer to a JSON-RPC call means, decided without I/O.

    Returns:
        An `Answer` for a result; `Lost` for what protocol.md §6 says to
        retry (HTTP 502/503/504, an empty body); `Gone` for HTTP 404.

    Raises:
        RpcError: the envelope holds a JSON-RPC error.
        RpcUnavailableError: another HTTP error status without a JSON-RPC body.
        ProtocolError: a 2xx answer that is not a JSON-RPC response to this request.
    """
    if status == 404:
        return Gone("the server does not know this session (HTTP 404)")
    if status in RETRYABLE_STATUSES:
        return Lost(f"HTTP {status}", sent=True)
    if not body.strip():
        return Lost(f"an empty answer (HTTP {status})", sent=True)
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        envelope = None
    if not isinstance(envelope, dict) or ("result" not in envelope and "error" not in envelope):
        if not 200 <= status < 300:
            raise RpcUnavailableError(f"{method}: the data plane answered HTTP {status}")
        raise ProtocolError(f"{method}: the answer is not a JSON-RPC response", method=method)
    answered_id = envelope.get("id")
    if answered_id is not None and answered_id != request_id:
        raise ProtocolError(
            f"{method}: the answer is for request {answered_id!r:.20}, not {request_id}",
            method=method,
            rpc_id=request_id,
        )
    error = envelope.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise ProtocolError(f"{method}: 'error' must be an object, got {_kind(error)}")
        code, message = error.get("code"), error.get("message")
        if type(code) is not int or not isinstance(message, str):
            raise ProtocolError(f"{method}: an error needs an integer code and a string message")
        raise RpcError(code, message, error.get("data"), method=method)
    return Answer(envelope, body)


# ---------------------------------------------------------------- inputs


def _pubkey(address: Address) -> Pubkey:
    if isinstance(address, Pubkey):
        return address
    if not isinstance(address, str):
        raise TypeError(f"an address is a Pubkey or a base58 str, got {type(address).__qualname__}")
    try:
        return Pubkey.from_string(address)
    except ValueError:
        raise ValueError(f"{address!r:.60} is not a base58 address") from None


def _pubkeys(addresses: Iterable[Address]) -> list[Pubkey]:
    if isinstance(addresses, str | Pubkey):
        raise TypeError("pass a list of addresses, not a single one")
    return [_pubkey(a) for a in addresses]


def _signature(signature: Signature | str) -> Signature:
    if isinstance(signature, Signature):
        return signature
    if not isinstance(signature, str):
        raise TypeError(
            f"a signature is a Signature or a base58 str, got {type(signature).__qualname__}"
        )
    try:
        return Signature.from_string(signature)
    except ValueError:
        raise ValueError(f"{signature!r:.100} is not a base58 signature") from None


def _transaction(tx: AnyTransaction) -> VersionedTransaction | Transaction:
    if isinstance(tx, VersionedTransaction | Transaction):
        found = tx
    elif isinstance(tx, str):
        try:
            found = VersionedTransaction.from_bytes(base64.b64decode(tx, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not a base64 serialized transaction ({exc})") from None
    else:
        raise TypeError(
            "a transaction is a solders VersionedTransaction or Transaction, or base64 str; "
            f"got {type(tx).__qualname__}"
        )
    if not found.signatures:
        raise ValueError("the transaction has no signature")
    return found


def _account_states_wire(states: Mapping[Address, AccountData | Account]) -> dict[str, Any]:
    """``modifyAccounts`` takes the ``AccountData`` of a continue: one codec spells both."""
    continue_params = ContinueParams(modify_account_states=states)
    wire: dict[str, Any] = orjson.loads(encode_control(Continue(continue_params)))["params"]
    return dict(wire["modifyAccountStates"])


# ---------------------------------------------------------------- the client


class _SoldersRequest(Protocol):
    def to_json(self) -> str: ...


class _SoldersResponse(Protocol):
    @staticmethod
    def from_json(raw: str) -> object: ...


_COMPLETED: Final = "the session has completed; its data plane is gone"

_DEFAULT_CONTEXT: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The verifying context the control socket uses too, built once."""
    global _DEFAULT_CONTEXT
    if _DEFAULT_CONTEXT is None:
        _DEFAULT_CONTEXT = ssl.create_default_context()
    return _DEFAULT_CONTEXT


class SessionRpc:
    """JSON-RPC calls to one session's data plane, with solders types in and out.

    Get it as ``session.rpc``. Every method may be called from many tasks at once; the
    session's one HTTP pool bounds the connections, never correctness. Reads and
    `modify_accounts` are retried on transport failures, empty answers and HTTP
    502/503/504 (``RPC_ATTEMPTS`` tries, the n-th wait ``n * RPC_RETRY_STEP``);
    `send_transaction` is never resent blindly.

    Every call raises `RpcError` (the server's JSON-RPC error), `RpcUnavailableError`
    (no answer, or the session completed or closed: then at once, without a network
    round trip) or `ProtocolError` (an answer that breaks protocol.md §6).
    """

    def __init__(
        self,
        endpoint: Callable[[], str],
        *,
        config: ClientConfig,
        completed: Completion | trio.Event | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        request_timeout: float = RPC_REQUEST_TIMEOUT,
        nursery: trio.Nursery | None = None,
    ) -> None:
        """Bind to the data plane that ``endpoint()`` names.

        Args:
            endpoint: The session's ``rpcEndpoint`` (read at the first call).
            config: TLS settings and the answer size limit.
            completed: Set when the session completed; calls fail from then on.
            transport: An httpx transport to use instead of the network.
            request_timeout: Seconds one try may take.
            nursery: Where to start `run` when the first call opens the HTTP pool, so a
                session that never calls costs no task; without it the owner runs `run`.
        """
        self._nursery = nursery
        self._endpoint = endpoint
        self._config = config
        self._completed = completed
        self._transport = transport
        self._request_timeout = request_timeout
        self._client: httpx.AsyncClient | None = None
        self._url: str | None = None
        self._gone: str | None = None
        self._gone_event = trio.Event()
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        state = "open" if self._gone is None else "gone"
        return f"<SessionRpc {state}>"

    # ------------------------------------------------------------ lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the HTTP pool for as long as the nursery this runs in; close it after.

        Calls fail with `RpcUnavailableError` from the moment the session completed.
        """
        try:
            task_status.started()
            if self._completed is not None:
                await self._completed.wait()
                self._mark_gone(_COMPLETED)
            await trio.sleep_forever()
        finally:
            self._mark_gone("the session is closed")
            client, self._client = self._client, None
            if client is not None:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(self._config.graceful_close_timeout):
                        await client.aclose()

    def _mark_gone(self, reason: str) -> None:
        if self._gone is None:
            self._gone = reason
            self._gone_event.set()

    def _open_client(self, method: str) -> tuple[httpx.AsyncClient, str]:
        if self._completed is not None and self._completed.is_set():
            # Known before `run` wakes up to it: the user may already hold `Completed`.
            self._mark_gone(_COMPLETED)
        if self._gone is not None:
            raise RpcUnavailableError(f"{method}: {self._gone}")
        if self._client is None or self._url is None:
            if self._nursery is not None:
                try:
                    self._nursery.start_soon(self.run)
                except RuntimeError:  # the session's nursery is closed: so is the session
                    self._mark_gone("the session is closed")
                    raise RpcUnavailableError(f"{method}: {self._gone}") from None
                self._nursery = None
            self._url = http_endpoint(self._endpoint())
            self._client = httpx.AsyncClient(
                transport=self._transport,
                verify=self._config.ssl_context or default_ssl_context(),
                # Deadlines are Trio's (virtual time in tests); proxies and .netrc from
                # the environment never see the session id.
                timeout=None,
                trust_env=False,
                limits=httpx.Limits(
                    max_connections=RPC_MAX_CONNECTIONS,
                    max_keepalive_connections=RPC_MAX_CONNECTIONS,
                ),
                headers={"content-type": "application/json", "user-agent": "trio-backtest"},
            )
        return self._client, self._url

    # ------------------------------------------------------------ one try, many tries

    async def _try_once(self, method: str, body: bytes, request_id: int) -> Answer | Lost:
        client, url = self._open_client(method)
        with trio.move_on_after(self._request_timeout):
            try:
                status, content = await self._post(client, url, body, method)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                refused = _certificate_error(exc)
                if refused is not None:  # a certificate does not get better by asking again
                    raise RpcUnavailableError(
                        f"{method}: the data plane's TLS certificate was refused ({refused})"
                    ) from None
                return Lost(_describe(exc), sent=False)
            except httpx.TransportError as exc:
                return Lost(_describe(exc), sent=True)
            except httpx.HTTPError as exc:
                raise ProtocolError(f"{method}: unreadable answer ({_describe(exc)})") from None
            except RuntimeError:
                if self._gone is not None:  # the pool was closed under this call
                    raise RpcUnavailableError(f"{method}: {self._gone}") from None
                raise
            outcome = interpret_answer(status, content, method=method, request_id=request_id)
            if isinstance(outcome, Gone):
                self._mark_gone(outcome.reason)  # later calls need not ask again
                raise RpcUnavailableError(f"{method}: {outcome.reason}")
            return outcome
        return Lost(f"no answer within {self._request_timeout:g} s", sent=True)

    async def _post(
        self, client: httpx.AsyncClient, url: str, body: bytes, method: str
    ) -> tuple[int, bytes]:
        """Send one request; the status and the (decoded) body, read up to the size limit."""
        limit = self._config.max_message_size
        async with (
            client.stream("POST", url, content=body) as response,
            # httpx types it an iterator; it is a generator, closed here even when cut short.
            aclosing(cast("AsyncGenerator[bytes, None]", response.aiter_bytes())) as reading,
        ):
            chunks: list[bytes] = []
            size = 0
            async for chunk in reading:
                size += len(chunk)
                if size > limit:
                    raise ProtocolError(
                        f"{method}: the answer is larger than max_message_size ({limit} bytes)",
                        method=method,
                    )
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    async def _pause(self, attempt: int) -> None:
        """Wait before try ``attempt + 1``; cut short when the session goes away."""
        with trio.move_on_after(RPC_RETRY_STEP * attempt):
            await self._gone_event.wait()

    async def _exchange(
        self, method: str, make_body: Callable[[int], bytes], *, idempotent: bool
    ) -> Answer:
        request_id = next(self._ids)
        body = make_body(request_id)
        last: Lost | None = None
        for attempt in range(1, RPC_ATTEMPTS + 1):
            outcome = await self._try_once(method, body, request_id)
            if not isinstance(outcome, Lost):
                return outcome
            if outcome.sent and not idempotent:
                raise RpcUnavailableError(
                    f"{method}: the answer was lost ({outcome.reason}); the server may or may "
                    "not have acted on the call"
                )
            last = outcome
            logger.debug("%s: try %d of %d lost: %s", method, attempt, RPC_ATTEMPTS, last.reason)
            if attempt < RPC_ATTEMPTS:
                await self._pause(attempt)
        assert last is not None
        raise RpcUnavailableError(
            f"{method}: no answer after {RPC_ATTEMPTS} tries (last: {last.reason})"
        )

    async def _solders_call(
        self,
        method: str,
        build: Callable[[int], _SoldersRequest],
        response: type[R],
    ) -> R:
        answer = await self._exchange(
            method, lambda request_id: build(request_id).to_json().encode(), idempotent=True
        )
        return _parse(method, answer, response)

    # ------------------------------------------------------------ reads

    async def get_account_info(self, address: Address) -> Account | None:
        """The account at ``address`` as the session stands, or ``None`` if it does not exist."""
        key = _pubkey(address)
        answer = await self._solders_call(
            "getAccountInfo",
            lambda i: GetAccountInfo(key, _ACCOUNT_CONFIG, id=i),
            GetAccountInfoResp,
        )
        return answer.value

    async def get_multiple_accounts(self, addresses: Sequence[Address]) -> list[Account | None]:
        """The accounts at ``addresses``, in order (``None`` where there is none)."""
        keys = _pubkeys(addresses)
        found = await self._solders_call(
            "getMultipleAccounts",
            lambda i: GetMultipleAccounts(keys, _ACCOUNT_CONFIG, id=i),
            GetMultipleAccountsResp,
        )
        return list(found.value)

    async def get_balance(self, address: Address) -> int:
        """The lamports at ``address`` (0 for an account that does not exist)."""
        key = _pubkey(address)
        answer = await self._solders_call(
            "getBalance", lambda i: GetBalance(key, id=i), GetBalanceResp
        )
        return answer.value

    async def get_program_accounts(self, program_id: Address) -> list[tuple[Pubkey, Account]]:
        """Every account ``program_id`` owns, with its address."""
        key = _pubkey(program_id)
        keyed = await self._solders_call(
            "getProgramAccounts",
            lambda i: GetProgramAccounts(key, _PROGRAM_ACCOUNTS_CONFIG, id=i),
            GetProgramAccountsResp,
        )
        return [(item.pubkey, item.account) for item in keyed.value]

    async def get_latest_blockhash(self) -> Hash:
        """The blockhash of the slot the session stands at."""
        latest = await self._solders_call(
            "getLatestBlockhash",
            lambda i: GetLatestBlockhash(id=i),
            GetLatestBlockhashResp,
        )
        return latest.value.blockhash

    async def get_slot(self) -> int:
        """The slot the session stands at."""
        answer = await self._solders_call("getSlot", lambda i: GetSlot(id=i), GetSlotResp)
        return answer.value

    async def get_transaction(
        self, signature: Signature | str
    ) -> EncodedConfirmedTransactionWithStatusMeta | None:
        """An executed transaction (JSON encoding, as notifications carry it), or ``None``."""
        sig = _signature(signature)
        answer = await self._solders_call(
            "getTransaction",
            lambda i: GetTransaction(sig, _TRANSACTION_CONFIG, id=i),
            GetTransactionResp,
        )
        return answer.value

    async def get_signature_statuses(
        self, signatures: Sequence[Signature | str]
    ) -> list[TransactionStatus | None]:
        """The status of each signature, in order (``None``: not executed, or unknown)."""
        if isinstance(signatures, str | Signature):
            raise TypeError("pass a list of signatures, not a single one")
        sigs = [_signature(s) for s in signatures]
        statuses = await self._solders_call(
            "getSignatureStatuses",
            lambda i: GetSignatureStatuses(sigs, _STATUS_CONFIG, id=i),
            GetSignatureStatusesResp,
        )
        return list(statuses.value)

    async def simulate_transaction(
        self, tx: AnyTransaction, config: RpcSimulateTransactionConfig | None = None
    ) -> RpcSimulateTransactionResult:
        """Run ``tx`` against the session's current state without keeping its effects.

        ``config`` defaults to no signature verification and the transaction's own
        blockhash. A transaction that fails is a result with ``err`` set, not an error.
        """
        found = _transaction(tx)
        settings = config or _SIMULATE_CONFIG
        build: Callable[[int], _SoldersRequest]
        if isinstance(found, Transaction):
            build = lambda i: SimulateLegacyTransaction(found, settings, id=i)  # noqa: E731
        else:
            build = lambda i: SimulateVersionedTransaction(found, settings, id=i)  # noqa: E731
        answer = await self._solders_call("simulateTransaction", build, SimulateTransactionResp)
        return answer.value

    # ------------------------------------------------------------ writes

    async def modify_accounts(self, states: Mapping[Address, AccountData | Account]) -> None:
        """Install account states (``AccountData`` or solders ``Account``) by address.

        Each value replaces the whole account, so a retried call is harmless.
        """
        wire = _account_states_wire(states)
        await self._exchange(
            "modifyAccounts",
            lambda i: _envelope(i, "modifyAccounts", [wire]),
            idempotent=True,
        )

    async def send_transaction(
        self, tx: AnyTransaction, config: RpcSendTransactionConfig | None = None
    ) -> Signature:
        """Execute ``tx`` in the session's current slot; its signature.

        Never sent twice blindly: when an answer is lost, the transaction's signature
        status is asked first, and only a transaction the server has not seen is sent
        again. Give every transaction its own signature.

        Raises:
            RpcError: the server refused it (``-32002``: the preflight failed).
            RpcUnavailableError: no answer, and either the server has not seen the
                transaction after every try or its status could not be learned; its
                ``signature`` says which transaction.
        """
        found = _transaction(tx)
        signature = found.signatures[0]
        raw = bytes(found)
        settings = config or _SEND_CONFIG
        request_id = next(self._ids)
        body = SendRawTransaction(raw, settings, id=request_id).to_json().encode()
        resent = False
        for attempt in range(1, RPC_ATTEMPTS + 1):
            try:
                outcome = await self._try_once("sendTransaction", body, request_id)
            except RpcError as exc:
                if resent and _already_processed(exc):
                    return signature  # the try whose answer was lost got through
                raise
            if not isinstance(outcome, Lost):
                return _parse("sendTransaction", outcome, SendTransactionResp).value
            logger.debug("sendTransaction: try %d lost: %s", attempt, outcome.reason)
            if outcome.sent and await self._seen(signature, outcome.reason):
                return signature
            resent = True
            if attempt < RPC_ATTEMPTS:
                await self._pause(attempt)
        raise RpcUnavailableError(
            f"sendTransaction: no answer after {RPC_ATTEMPTS} tries, and the server has not "
            f"seen transaction {signature}",
            signature=signature,
        )

    async def _seen(self, signature: Signature, reason: str) -> bool:
        """Whether the server has the transaction whose answer was lost."""
        try:
            (status,) = await self.get_signature_statuses([signature])
        except (RpcError, RpcUnavailableError, ProtocolError) as exc:
            raise RpcUnavailableError(
                f"sendTransaction: the answer was lost ({reason}) and the transaction's status "
                f"could not be learned ({exc}); transaction {signature} may or may not execute",
                signature=signature,
            ) from None
        return status is not None

    # ------------------------------------------------------------ anything else

    async def call(self, method: str, params: Any = None, *, idempotent: bool | None = None) -> Any:
        """Call any JSON-RPC method; the raw JSON ``result``.

        For methods newer than this library. ``idempotent`` says whether a lost answer
        may be retried; by default every method is, except ``sendTransaction`` and
        ``requestAirdrop``.
        """
        if not isinstance(method, str) or not method:
            raise TypeError("method must be a non-empty str")
        retry = method not in NOT_IDEMPOTENT if idempotent is None else idempotent
        answer = await self._exchange(
            method, lambda i: _envelope(i, method, params), idempotent=retry
        )
        return answer.result


def _envelope(request_id: int, method: str, params: Any) -> bytes:
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        request["params"] = params
    return orjson.dumps(request)


def _parse(method: str, answer: Answer, response: type[R]) -> R:
    """A result parsed by solders into its response type."""
    try:
        parsed = response.from_json(answer.body.decode())
    except Exception as exc:  # solders raises its own error types
        raise ProtocolError(
            f"{method}: the result does not have the Solana shape ({exc})", method=method
        ) from None
    if not isinstance(parsed, response):
        raise ProtocolError(f"{method}: the result does not have the Solana shape", method=method)
    return parsed


def _already_processed(error: RpcError) -> bool:
    """A preflight that failed because this very transaction already executed."""
    data = error.data
    return isinstance(data, dict) and data.get("err") == "AlreadyProcessed"


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a failed connect, if that is what it was."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx and httpcore wrap the ssl error a few times
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ if not text else f"{type(exc).__name__}: {text[:200]}"


_ACCOUNT_CONFIG: Final = RpcAccountInfoConfig(encoding=UiAccountEncoding.Base64)
_PROGRAM_ACCOUNTS_CONFIG: Final = RpcProgramAccountsConfig(_ACCOUNT_CONFIG)
_TRANSACTION_CONFIG: Final = RpcTransactionConfig(
    encoding=UiTransactionEncoding.Json, max_supported_transaction_version=0
)
_STATUS_CONFIG: Final = RpcSignatureStatusConfig(search_transaction_history=True)
_SIMULATE_CONFIG: Final = RpcSimulateTransactionConfig(sig_verify=False)
_SEND_CONFIG: Final = RpcSendTransactionConfig()


@asynccontextmanager
async def open_session_rpc(
    rpc_endpoint: str,
    *,
    config: ClientConfig | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[SessionRpc]:
    """A `SessionRpc` for a data-plane address, its HTTP pool closed when the block ends.

    Sessions hand out their own as ``session.rpc``; this is for a session driven
    elsewhere, and for tests (``transport`` replaces the network, e.g. with
    ``httpx.MockTransport``).
    """
    http_endpoint(rpc_endpoint)  # a bad address fails here, not at the first call
    rpc = SessionRpc(lambda: rpc_endpoint, config=config or ClientConfig(), transport=transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(rpc.run)
        try:
            yield rpc
        finally:
            nursery.cancel_scope.cancel()
