"""The circuit breaker's states, on a clock the test moves."""

from __future__ import annotations

from portico.engines.breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("up/1", failures=3, cooldown_s=10, clock=clock)


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    breaker.failed()
    assert breaker.state is CircuitState.CLOSED and breaker.available()
    breaker.failed()
    assert breaker.state is CircuitState.OPEN and not breaker.available()
    assert breaker.probe_in_s() == 10


def test_after_the_cooldown_one_probe_closes_it() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failed()
    clock.now += 10
    assert breaker.state is CircuitState.HALF_OPEN and breaker.available() and breaker.probe_in_s() == 0
    breaker.sending()
    assert not breaker.available()  # the probe is the only request in flight
    breaker.succeeded()
    assert breaker.state is CircuitState.CLOSED and breaker.available()


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failed()
    clock.now += 10
    breaker.sending()
    breaker.failed()
    assert breaker.state is CircuitState.OPEN and breaker.probe_in_s() == 10
    clock.now += 9.9
    assert not breaker.available()
    clock.now += 0.1
    assert breaker.available()


def test_a_probe_without_a_verdict_lets_the_next_request_probe() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failed()
    clock.now += 10
    breaker.sending()
    breaker.released()  # the client left
    assert breaker.state is CircuitState.HALF_OPEN and breaker.available()
