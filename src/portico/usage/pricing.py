"""Cost of a request from a model's prices (USD per million tokens).

A price per million tokens is the price per token in micro-USD, so costs add up in integer micro-USD where
they must be exact (budgets); responses show USD.
"""

from __future__ import annotations

import math

from portico.settings import PricingSettings


def cost_usd(pricing: PricingSettings, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
    cached_price = (
        pricing.input_per_million if pricing.cached_input_per_million is None else pricing.cached_input_per_million
    )
    micros = (
        (prompt_tokens - cached_tokens) * pricing.input_per_million
        + cached_tokens * cached_price
        + completion_tokens * pricing.output_per_million
    )
    return round(micros / 1_000_000, 12)


def to_micros(usd: float) -> int:
    """USD as integer micro-USD, rounded up: a budget is never undercharged by rounding."""
    return math.ceil(round(usd * 1_000_000, 6))


def most_cost(pricing: PricingSettings, *, prompt_tokens: int, max_completion_tokens: int) -> float:
    """The most a request may cost: every prompt token uncached, every allowed token generated."""
    return cost_usd(pricing, prompt_tokens=prompt_tokens, completion_tokens=max_completion_tokens)
