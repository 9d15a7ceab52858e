from __future__ import annotations

import math
import random
from collections.abc import Callable

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.client.helpers import FixedRandom
from trio_backtest._config import ClientConfig
from trio_backtest._policy import (
    CauseKind,
    DisconnectCause,
    FailureWindow,
    GiveUp,
    ReconnectPolicy,
    Retry,
    is_final,
    is_overload,
)

LOW, MID, HIGH = 0.0, 0.5, 1.0
DROP = DisconnectCause.closed(1006)
POLICY = ReconnectPolicy()


def test_default_policy_uses_default_config() -> None:
    assert ReconnectPolicy().config == ClientConfig()


def test_backoff_schedule() -> None:
    expected = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert [POLICY.backoff(n) for n in range(1, 12)] == expected


def test_backoff_never_overflows() -> None:
    assert POLICY.backoff(100_000) == 30.0
    unbounded = ReconnectPolicy(ClientConfig(reconnect_max_backoff=math.inf))
    assert unbounded.backoff(100_000) == math.inf


def test_backoff_cap_also_caps_the_initial_backoff() -> None:
    policy = ReconnectPolicy(ClientConfig(reconnect_max_backoff=0.1))
    assert policy.backoff(2) == 0.1


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        POLICY.backoff(0)
    with pytest.raises(ValueError, match="start at 1"):
        POLICY.decide(0, 0.0, DROP, random.Random(0))


@pytest.mark.parametrize(
    ("fraction", "factor"), [(LOW, 0.8), (MID, 1.0), (HIGH, 1.2)], ids=["low", "mid", "high"]
)
def test_delay_schedule_with_jitter_bounds(fraction: float, factor: float) -> None:
    rng = FixedRandom(fraction)
    delays = [POLICY.delay(n, DROP, rng) for n in range(1, 11)]
    bases = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert delays == pytest.approx([b * factor for b in bases])
    # Attempt 1 is immediate and consumes no randomness.
    assert rng.calls == [(0.8, 1.2)] * 9


def test_zero_jitter_is_exact() -> None:
    policy = ReconnectPolicy(ClientConfig(reconnect_jitter=0.0))
    rng = FixedRandom(HIGH)
    assert [policy.delay(n, DROP, rng) for n in range(1, 6)] == [0.0, 0.25, 0.5, 1.0, 2.0]


def test_delay_with_a_real_rng_stays_in_bounds() -> None:
    rng = random.Random(1234)
    for n in range(2, 40):
        base = min(0.25 * 2 ** (n - 2), 30.0)  # client.md §3, not the code under test
        for _ in range(20):
            assert 0.8 * base <= POLICY.delay(n, DROP, rng) <= 1.2 * base


OVERLOAD = [DisconnectCause.closed(1013, "overloaded"), DisconnectCause.http_status(503)]


@pytest.mark.parametrize("cause", OVERLOAD, ids=str)
def test_overload_floor(cause: DisconnectCause) -> None:
    assert is_overload(cause)
    # Attempt 1 would be immediate: the floor applies, jittered upwards only.
    assert POLICY.delay(1, cause, FixedRandom(LOW)) == 5.0
    assert POLICY.delay(1, cause, FixedRandom(HIGH)) == pytest.approx(6.0)
    # Attempt 5 (2 s base) still waits at least 5 s.
    rng = FixedRandom(LOW)
    assert POLICY.delay(5, cause, rng) == 5.0
    assert rng.calls == [(0.8, 1.2), (1.0, 1.2)]
    # A backoff above the floor is kept: 30 s * 0.8.
    assert POLICY.delay(10, cause, FixedRandom(LOW)) == pytest.approx(24.0)


def test_overload_floor_exceeds_a_small_max_backoff() -> None:
    policy = ReconnectPolicy(ClientConfig(reconnect_max_backoff=1.0))
    assert policy.delay(9, DisconnectCause.closed(1013), FixedRandom(MID)) == pytest.approx(5.5)


@pytest.mark.parametrize(
    "cause",
    [
        DisconnectCause.closed(1011),
        DisconnectCause.closed(1001),
        DisconnectCause.http_status(502),
        DisconnectCause.http_status(429),
        DisconnectCause.server_error("Internal"),
        DisconnectCause.keepalive(),
    ],
    ids=str,
)
def test_other_causes_are_not_overload(cause: DisconnectCause) -> None:
    assert not is_overload(cause)
    assert POLICY.delay(1, cause, FixedRandom(HIGH)) == 0.0


FINAL_CAUSES = [
    DisconnectCause.http_status(401),
    DisconnectCause.http_status(403, "bad key"),
    DisconnectCause.closed(1008, "policy violation"),
    DisconnectCause.closed(4404),
    DisconnectCause.server_error("SessionNotFound", "session 12 not found"),
    DisconnectCause.server_error("SessionOwnerMismatch"),
    DisconnectCause.server_error("sessionNotFound"),
    DisconnectCause.server_error("sessionOwnerMismatch"),
    DisconnectCause.create_rejected("start_slot after end_slot"),
    DisconnectCause.tls("SSLCertVerificationError: certificate verify failed"),
    DisconnectCause.tls("SSLError: wrong version number"),
]

RETRIABLE_CAUSES = [
    DisconnectCause.connect_failed("connection refused"),
    DisconnectCause.http_status(404),
    DisconnectCause.http_status(500),
    DisconnectCause.http_status(503),
    DisconnectCause.closed(None),
    DisconnectCause.closed(1000),
    DisconnectCause.closed(1001),
    DisconnectCause.closed(1006),
    DisconnectCause.closed(1009),
    DisconnectCause.closed(1011),
    DisconnectCause.closed(1013),
    DisconnectCause.timeout("sessionCreated"),
    DisconnectCause.keepalive(),
    DisconnectCause.protocol("sessionAttached expected"),
    DisconnectCause.server_error("InvalidRequest", "session is not ready"),
    DisconnectCause.server_error("Internal"),
    DisconnectCause(CauseKind.SERVER_ERROR),
    DisconnectCause.oversize("17 MiB frame"),
    DisconnectCause.subscribe_rejected(-32602, "bad params"),
]


@pytest.mark.parametrize("cause", FINAL_CAUSES, ids=str)
def test_final_causes_give_up_at_once(cause: DisconnectCause) -> None:
    assert is_final(cause)
    rng = FixedRandom(MID)
    decision = POLICY.decide(1, 0.0, cause, rng)
    assert decision == GiveUp(reason=f"{cause} (not retried)", final=True)
    assert rng.calls == []


@pytest.mark.parametrize("cause", RETRIABLE_CAUSES, ids=str)
def test_retriable_causes(cause: DisconnectCause) -> None:
    assert is_final(cause) is False
    assert isinstance(POLICY.decide(1, 0.0, cause, FixedRandom(MID)), Retry)


def test_decide_attempt_budget() -> None:
    rng = FixedRandom(MID)
    assert POLICY.decide(20, 100.0, DROP, rng) == Retry(attempt=20, delay=30.0)
    give_up = POLICY.decide(21, 100.0, DROP, rng)
    assert isinstance(give_up, GiveUp)
    assert not give_up.final
    assert give_up.reason == (
        "gave up after 20 reconnect attempts in 100.0 s; "
        "last failure: closed with code 1006 (abnormal closure)"
    )


def test_decide_time_budget() -> None:
    rng = FixedRandom(MID)
    assert POLICY.decide(3, 600.0, DROP, rng) == Retry(attempt=3, delay=0.5)
    give_up = POLICY.decide(3, 600.5, DROP, rng)
    assert isinstance(give_up, GiveUp)
    assert not give_up.final
    assert "600.5 s of reconnecting (limit 600 s, 2 attempts)" in give_up.reason


def test_final_beats_budget() -> None:
    decision = POLICY.decide(99, 9999.0, DisconnectCause.http_status(401), FixedRandom(MID))
    assert decision == GiveUp(
        reason="upgrade refused with HTTP 401 (Unauthorized) (not retried)", final=True
    )


def test_gated() -> None:
    assert [POLICY.gated(n) for n in range(1, 8)] == [False] * 5 + [True] * 2
    every = ReconnectPolicy(ClientConfig(reconnect_ungated_attempts=0))
    assert every.gated(1)


@pytest.mark.parametrize(
    ("cause", "text"),
    [
        (DisconnectCause.closed(1013), "closed with code 1013 (try again later)"),
        (DisconnectCause.closed(1000, "bye"), "closed with code 1000 (normal closure): bye"),
        (DisconnectCause.closed(4404), "closed with code 4404 (session not found)"),
        (DisconnectCause.closed(4999), "closed with code 4999"),
        (DisconnectCause.closed(None), "closed without a close code"),
        (DisconnectCause.http_status(503), "upgrade refused with HTTP 503 (Service Unavailable)"),
        (DisconnectCause.http_status(599, "odd"), "upgrade refused with HTTP 599: odd"),
        (DisconnectCause.connect_failed("refused"), "connect failed: refused"),
        (DisconnectCause.tls("SSLError: x"), "TLS handshake failed: SSLError: x"),
        (DisconnectCause.timeout("sessionCreated"), "timed out waiting for sessionCreated"),
        (DisconnectCause(CauseKind.TIMEOUT), "timed out waiting for the server"),
        (DisconnectCause.keepalive(), "no inbound traffic within the keepalive deadline"),
        (DisconnectCause.protocol("not JSON"), "protocol error: not JSON"),
        (
            DisconnectCause.server_error("SessionNotFound", "no session 5"),
            "server error SessionNotFound: no session 5",
        ),
        (DisconnectCause(CauseKind.SERVER_ERROR), "server error unknown"),
        (DisconnectCause.create_rejected("bad range"), "session create rejected: bad range"),
        (DisconnectCause.oversize(), "inbound message larger than max_message_size"),
        (
            DisconnectCause.subscribe_rejected(-32602, "bad params"),
            "subscribe rejected with JSON-RPC error -32602: bad params",
        ),
    ],
)
def test_cause_str(cause: DisconnectCause, text: str) -> None:
    assert str(cause) == text
    assert "\n" not in str(cause)


def test_every_kind_has_a_str() -> None:
    for kind in CauseKind:
        assert str(DisconnectCause(kind))


K = CauseKind
C = DisconnectCause


@pytest.mark.parametrize(
    ("build", "args", "fields"),
    [
        (C.connect_failed, ("refused",), (K.CONNECT_FAILED, None, "refused", None)),
        (C.tls, ("SSLError: x",), (K.TLS, None, "SSLError: x", None)),
        (C.http_status, (401,), (K.HTTP_STATUS, 401, "", None)),
        (C.http_status, (502, "bad gateway"), (K.HTTP_STATUS, 502, "bad gateway", None)),
        (C.closed, (None,), (K.CLOSED, None, "", None)),
        (C.closed, (1013, "busy"), (K.CLOSED, 1013, "busy", None)),
        (C.timeout, ("sessionCreated",), (K.TIMEOUT, None, "sessionCreated", None)),
        (C.keepalive, (), (K.KEEPALIVE, None, "", None)),
        (C.protocol, ("not JSON",), (K.PROTOCOL, None, "not JSON", None)),
        (C.server_error, ("Internal",), (K.SERVER_ERROR, None, "", "Internal")),
        (C.server_error, ("Internal", "x"), (K.SERVER_ERROR, None, "x", "Internal")),
        (C.create_rejected, ("bad range",), (K.CREATE_REJECTED, None, "bad range", None)),
        (C.oversize, (), (K.OVERSIZE, None, "", None)),
        (C.oversize, ("17 MiB",), (K.OVERSIZE, None, "17 MiB", None)),
        (C.subscribe_rejected, (-32602,), (K.SUBSCRIBE_REJECTED, -32602, "", None)),
        (C.subscribe_rejected, (-1, "bad"), (K.SUBSCRIBE_REJECTED, -1, "bad", None)),
    ],
)
def test_constructors_fill_every_field(
    build: Callable[..., DisconnectCause],
    args: tuple[object, ...],
    fields: tuple[CauseKind, int | None, str, str | None],
) -> None:
    """Each constructor sets kind, code, detail and variant, and only those it names."""
    cause = build(*args)
    assert (cause.kind, cause.code, cause.detail, cause.variant) == fields


# FailureWindow --------------------------------------------------------------------------


def window(**overrides: float) -> FailureWindow:
    config = ClientConfig(reconnect_jitter=0.0, **overrides)  # type: ignore[arg-type]
    return FailureWindow(ReconnectPolicy(config), FixedRandom(MID))


def test_a_new_window_is_down_and_empty() -> None:
    fw = window()
    assert (fw.is_up, fw.made_progress, fw.gave_up) == (False, False, None)
    fw.connected(0.0)
    assert (fw.is_up, fw.made_progress) == (True, False)
    fw.progressed()
    assert fw.made_progress is True


def test_first_failure_opens_the_window() -> None:
    fw = window()
    assert fw.window_started is None
    assert fw.attempt == 0
    assert fw.elapsed(5.0) == 0.0
    assert fw.attempt_failed(10.0, DROP) == Retry(attempt=1, delay=0.0)
    assert fw.window_started == 10.0
    assert fw.attempt_failed(11.0, DROP) == Retry(attempt=2, delay=0.25)
    assert fw.attempt_failed(12.0, DROP) == Retry(attempt=3, delay=0.5)
    assert fw.attempt == 3
    assert fw.elapsed(12.0) == 2.0


def test_drop_after_long_uptime_opens_a_new_window() -> None:
    fw = window()
    fw.connected(0.0)
    assert fw.dropped(100.0, DROP) == Retry(attempt=1, delay=0.0)
    assert fw.attempt_failed(101.0, DROP) == Retry(attempt=2, delay=0.25)
    fw.add_parked(5.0)
    fw.connected(102.0)
    # Up for exactly reconnect_uptime_reset: a new window with a fresh budget.
    assert fw.dropped(162.0, DROP) == Retry(attempt=1, delay=0.0)
    assert fw.window_started == 162.0
    assert fw.parked == 0.0


def test_drop_after_short_uptime_continues_the_window() -> None:
    fw = window()
    fw.connected(0.0)
    assert fw.dropped(100.0, DROP) == Retry(attempt=1, delay=0.0)
    fw.connected(100.0)
    assert fw.is_up
    assert fw.dropped(159.9, DROP) == Retry(attempt=2, delay=0.25)
    assert not fw.is_up
    assert fw.window_started == 100.0


def test_first_connection_drop_opens_the_window_even_if_short() -> None:
    fw = window()
    fw.connected(0.0)
    assert fw.dropped(1.0, DROP) == Retry(attempt=1, delay=0.0)
    assert fw.window_started == 1.0


def test_dropped_without_connected_counts_as_failed_attempt() -> None:
    fw = window()
    fw.attempt_failed(0.0, DROP)
    assert fw.dropped(1000.0, DROP) == GiveUp(
        reason="gave up after 1000.0 s of reconnecting (limit 600 s, 1 attempts); "
        "last failure: closed with code 1006 (abnormal closure)",
        final=False,
    )


def test_flapping_connection_exhausts_attempts() -> None:
    fw = window(reconnect_max_attempts=3)
    now = 0.0
    decisions = []
    for _ in range(4):
        fw.connected(now)
        now += 1.0
        decisions.append(fw.dropped(now, DROP))
    assert [d.attempt for d in decisions[:3] if isinstance(d, Retry)] == [1, 2, 3]
    assert isinstance(decisions[3], GiveUp)
    assert not decisions[3].final


#: client.md §3: attempt n >= 2 waits min(0.25 * 2 ** (n - 2), 30) seconds (jitter off).
SPEC_BACKOFF = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_a_drop_after_progress_is_attempt_one_again() -> None:
    # client.md §3 (revised): a connection that delivered something new ends the window.
    fw = window()
    now = 0.0
    for _ in range(3 * 20):  # far more drops than the 20 attempts a window allows
        fw.connected(now)
        fw.progressed()
        assert fw.made_progress
        now += 2.0
        assert fw.dropped(now, DROP) == Retry(attempt=1, delay=0.0)
        assert fw.window_started == now


def test_reconnects_that_bring_nothing_new_back_off_in_full() -> None:
    fw = window()
    now, delays = 0.0, []
    for _ in range(12):
        fw.connected(now)
        now += 1.0
        decision = fw.dropped(now, DROP)
        assert isinstance(decision, Retry)
        delays.append(decision.delay)
        now += decision.delay
    assert delays == SPEC_BACKOFF


def test_progress_while_not_up_is_ignored() -> None:
    fw = window()
    fw.connected(0.0)
    assert fw.dropped(1.0, DROP) == Retry(attempt=1, delay=0.0)
    fw.progressed()  # e.g. a replay handed over before the resume: not Up yet
    assert not fw.made_progress
    assert fw.attempt_failed(2.0, DROP) == Retry(attempt=2, delay=0.25)
    fw.connected(3.0)
    assert fw.dropped(4.0, DROP) == Retry(attempt=3, delay=0.5)


def test_the_window_after_progress_climbs_again_without_it() -> None:
    fw = window(reconnect_max_attempts=3)
    fw.connected(0.0)
    fw.progressed()
    assert fw.dropped(1.0, DROP) == Retry(attempt=1, delay=0.0)
    assert fw.attempt_failed(1.0, DROP) == Retry(attempt=2, delay=0.25)
    fw.connected(2.0)
    assert fw.dropped(3.0, DROP) == Retry(attempt=3, delay=0.5)
    assert fw.attempt_failed(3.5, DROP) == GiveUp(
        reason="gave up after 3 reconnect attempts in 2.5 s; "
        "last failure: closed with code 1006 (abnormal closure)",
        final=False,
    )


def test_a_clean_end_of_the_connection_ends_the_window() -> None:
    fw = window(reconnect_max_attempts=2)
    for n in range(5):
        fw.connected(10.0 * n)
        fw.ended_cleanly()
        assert fw.dropped(10.0 * n + 1, DisconnectCause.closed(1000)) == Retry(1, 0.0)


def test_progress_does_not_undo_a_give_up() -> None:
    fw = window()
    assert isinstance(fw.attempt_failed(0.0, DisconnectCause.http_status(401)), GiveUp)
    fw.progressed()
    assert isinstance(fw.attempt_failed(1.0, DROP), GiveUp)


def test_parked_time_is_excluded() -> None:
    fw = window(reconnect_max_total=10.0)
    fw.attempt_failed(0.0, DROP)
    fw.add_parked(100.0)
    assert fw.elapsed(105.0) == 5.0
    assert isinstance(fw.attempt_failed(110.0, DROP), Retry)
    assert isinstance(fw.attempt_failed(110.5, DROP), GiveUp)


def test_parked_outside_a_window_is_ignored() -> None:
    fw = window()
    fw.add_parked(50.0)
    assert fw.parked == 0.0
    fw.attempt_failed(0.0, DROP)
    fw.add_parked(0.0)  # >= 0 s is accepted, including no time at all
    fw.add_parked(0.5)
    assert fw.parked == 0.5
    with pytest.raises(ValueError, match="parked time"):
        fw.add_parked(-1.0)
    with pytest.raises(ValueError, match="parked time"):
        fw.add_parked(math.nan)


def test_give_up_is_sticky() -> None:
    fw = window()
    final = fw.attempt_failed(0.0, DisconnectCause.closed(4404))
    assert final == GiveUp(
        reason="closed with code 4404 (session not found) (not retried)", final=True
    )
    assert fw.gave_up == final
    assert fw.attempt_failed(1.0, DROP) is final
    assert fw.dropped(2.0, DROP) is final
    assert fw.attempt == 0
    with pytest.raises(RuntimeError, match=r"^connected\(\) after the failure window gave up$"):
        fw.connected(3.0)


def test_window_uses_the_given_rng() -> None:
    rng = FixedRandom(HIGH)
    fw = FailureWindow(ReconnectPolicy(), rng)
    fw.attempt_failed(0.0, DROP)
    decision = fw.attempt_failed(0.0, DROP)
    assert isinstance(decision, Retry)
    assert decision.attempt == 2
    assert decision.delay == pytest.approx(0.3)
    assert rng.calls == [(0.8, 1.2)]


def test_repr_is_informative() -> None:
    fw = window()
    fw.attempt_failed(1.0, DROP)
    assert repr(fw) == "<FailureWindow attempt=1 window_started=1.0 parked=0.0 up=False>"


# The state machine ----------------------------------------------------------------------

#: client.md §3: the causes after which the policy never retries, and those that ask it to
#: back off. The oracle of the properties below, written down from the spec (not computed
#: with `is_final`/`is_overload`, the code under test).
FINAL_CODES = {(CauseKind.HTTP_STATUS, 401), (CauseKind.HTTP_STATUS, 403)} | {
    (CauseKind.CLOSED, 1008),
    (CauseKind.CLOSED, 4404),
}
OVERLOAD_CODES = {(CauseKind.CLOSED, 1013), (CauseKind.HTTP_STATUS, 503)}


def spec_final(cause: DisconnectCause) -> bool:
    """Whether client.md §3 calls ``cause`` final (for the causes `CAUSES` draws)."""
    return cause in FINAL_CAUSES or (cause.kind, cause.code) in FINAL_CODES


def spec_overload(cause: DisconnectCause) -> bool:
    """Whether client.md §3 asks for the 5 s overload floor after ``cause``."""
    return (cause.kind, cause.code) in OVERLOAD_CODES


CAUSES = st.one_of(
    st.sampled_from(FINAL_CAUSES + RETRIABLE_CAUSES),
    st.builds(DisconnectCause.closed, st.integers(1000, 4999)),
    st.builds(DisconnectCause.http_status, st.integers(400, 599)),
)


class FailureWindowMachine(RuleBasedStateMachine):
    """Drives a FailureWindow against a plain model of client.md §3."""

    config: ClientConfig
    fw: FailureWindow

    @initialize(
        max_attempts=st.integers(1, 6),
        max_total=st.sampled_from([5.0, 30.0, 200.0]),
        uptime_reset=st.sampled_from([0.0, 10.0, 60.0]),
        jitter=st.sampled_from([0.0, 0.2, 0.5]),
        max_backoff=st.sampled_from([1.0, 30.0]),
        seed=st.integers(0, 2**32),
    )
    def setup(
        self,
        max_attempts: int,
        max_total: float,
        uptime_reset: float,
        jitter: float,
        max_backoff: float,
        seed: int,
    ) -> None:
        self.config = ClientConfig(
            reconnect_max_attempts=max_attempts,
            reconnect_max_total=max_total,
            reconnect_uptime_reset=uptime_reset,
            reconnect_jitter=jitter,
            reconnect_max_backoff=max_backoff,
        )
        self.fw = FailureWindow(ReconnectPolicy(self.config), random.Random(seed))
        self.now = 0.0
        self.progress = False
        self.up_since: float | None = None
        self.window_start: float | None = None
        self.parked = 0.0
        self.attempt = 0
        self.gave_up: GiveUp | None = None

    def check(self, decision: Retry | GiveUp, cause: DisconnectCause, new_window: bool) -> None:
        if self.gave_up is not None:
            assert decision is self.gave_up
            return
        if new_window:
            self.window_start, self.parked, self.attempt = self.now, 0.0, 0
        assert self.window_start is not None
        elapsed = self.now - self.window_start - self.parked
        cfg = self.config
        if spec_final(cause):
            assert isinstance(decision, GiveUp)
            assert decision.final
            self.gave_up = decision
        elif self.attempt + 1 > cfg.reconnect_max_attempts or elapsed > cfg.reconnect_max_total:
            assert isinstance(decision, GiveUp)
            assert not decision.final
            self.gave_up = decision
        else:
            assert isinstance(decision, Retry)
            assert decision.attempt == self.attempt + 1
            self.attempt = decision.attempt
            j = cfg.reconnect_jitter
            if spec_overload(cause):
                floor = cfg.reconnect_overload_min_delay
                assert floor <= decision.delay <= max(floor, cfg.reconnect_max_backoff) * (1 + j)
            elif decision.attempt == 1:
                assert decision.delay == 0.0
            else:
                assert 0 <= decision.delay <= cfg.reconnect_max_backoff * (1 + j)
        assert self.fw.attempt == self.attempt
        assert self.fw.window_started == self.window_start

    @precondition(lambda self: self.up_since is None and self.gave_up is None)
    @rule()
    def connect(self) -> None:
        self.fw.connected(self.now)
        self.up_since = self.now
        self.progress = False

    @rule()
    def deliver_something_new(self) -> None:
        self.fw.progressed()
        if self.up_since is not None:
            self.progress = True

    @precondition(lambda self: self.up_since is not None)
    @rule(cause=CAUSES)
    def drop(self, cause: DisconnectCause) -> None:
        assert self.up_since is not None
        long_up = self.now - self.up_since >= self.config.reconnect_uptime_reset
        ends = long_up or self.progress or self.window_start is None
        self.up_since, self.progress = None, False
        decision = self.fw.dropped(self.now, cause)
        self.check(decision, cause, new_window=ends)

    @precondition(lambda self: self.up_since is None)
    @rule(cause=CAUSES)
    def attempt_fails(self, cause: DisconnectCause) -> None:
        decision = self.fw.attempt_failed(self.now, cause)
        self.check(decision, cause, new_window=self.window_start is None)

    @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, 20.0, 70.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    # The two rules below land exactly on (or next to) the limits, where mistakes hide.
    @precondition(lambda self: self.window_start is not None)
    @rule(delta=st.sampled_from([-0.25, 0.0, 0.001, 0.25]))
    def near_time_budget(self, delta: float) -> None:
        assert self.window_start is not None
        edge = self.window_start + self.parked + self.config.reconnect_max_total + delta
        self.now = max(self.now, edge)

    @precondition(lambda self: self.up_since is not None)
    @rule(delta=st.sampled_from([-0.001, 0.0, 0.25]))
    def near_uptime_reset(self, delta: float) -> None:
        assert self.up_since is not None
        self.now = max(self.now, self.up_since + self.config.reconnect_uptime_reset + delta)

    @precondition(lambda self: self.up_since is None and self.window_start is not None)
    @rule(seconds=st.sampled_from([1.0, 50.0, 500.0]))
    def park(self, seconds: float) -> None:
        # Parking takes real time; none of it may count against the budget.
        self.fw.add_parked(seconds)
        self.now += seconds
        self.parked += seconds

    @invariant()
    def elapsed_excludes_parked(self) -> None:
        if self.window_start is None:
            assert self.fw.elapsed(self.now) == 0.0
        else:
            expected = self.now - self.window_start - self.parked
            assert self.fw.elapsed(self.now) == pytest.approx(expected)
            assert self.fw.parked == self.parked


FailureWindowMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestFailureWindowMachine = FailureWindowMachine.TestCase


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(1, 200),
    elapsed=st.floats(0, 1000),
    cause=CAUSES,
    fraction=st.floats(0, 1),
)
def test_decide_matches_the_rules(
    attempt: int, elapsed: float, cause: DisconnectCause, fraction: float
) -> None:
    config = ClientConfig()
    decision = ReconnectPolicy(config).decide(attempt, elapsed, cause, FixedRandom(fraction))
    over_budget = attempt > 20 or elapsed > 600
    if spec_final(cause) or over_budget:
        assert isinstance(decision, GiveUp)
        assert decision.final == spec_final(cause)
    else:
        assert isinstance(decision, Retry)
        assert decision.attempt == attempt
        low = (SPEC_BACKOFF[attempt - 1] if attempt <= len(SPEC_BACKOFF) else 30.0) * 0.8
        high = 30.0 * 1.2
        if spec_overload(cause):
            low, high = max(low, 5.0), max(high, 6.0)
        assert low - 1e-9 <= decision.delay <= high + 1e-9


def test_policy_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        POLICY.config = ClientConfig()  # type: ignore[misc]
