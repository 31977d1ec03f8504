"""A circuit breaker per upstream deployment: stop sending to one that keeps failing, probe it, let it back in.

Closed: requests flow; ``failures`` consecutive failures open the circuit. Open: no requests for ``cooldown_s``.
Half-open (the cooldown is over): the next request is a probe, the only one in flight; its success closes the
circuit, its failure opens it for another cooldown. A probe that ends without a verdict (the client left)
lets the next request probe instead. State is per process: each server process learns on its own traffic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from portico.observability import metrics

logger = logging.getLogger("portico.gateway")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, name: str, *, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._open = False
        self._opened_at = 0.0
        self._failures = 0
        self._probing = False
        metrics.circuit_state(name, is_open=False)

    @property
    def state(self) -> CircuitState:
        if not self._open:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def probe_in_s(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when closed or half-open)."""
        if not self._open:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def available(self) -> bool:
        """Whether a request may be sent now (without claiming the probe)."""
        state = self.state
        return state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN and not self._probing)

    def sending(self) -> None:
        """A request goes out: in half-open, it is the probe."""
        if self._open:
            self._probing = True

    def succeeded(self) -> None:
        if self._open:
            logger.info("circuit of upstream deployment %s closed: the probe succeeded", self.name)
            metrics.circuit_state(self.name, is_open=False)
        self._open, self._failures, self._probing = False, 0, False

    def failed(self) -> None:
        self._failures += 1
        if self._open:  # the probe failed (or a request sent just before the circuit opened)
            self._opened_at, self._probing = self._clock(), False
            return
        if self._failures >= self.threshold:
            self._open, self._opened_at = True, self._clock()
            metrics.circuit_state(self.name, is_open=True)
            logger.warning(
                "circuit of upstream deployment %s opened after %d consecutive failures; probing in %gs",
                self.name,
                self._failures,
                self.cooldown_s,
            )

    def released(self) -> None:
        """The request ended without telling whether the deployment works (the client left)."""
        self._probing = False
