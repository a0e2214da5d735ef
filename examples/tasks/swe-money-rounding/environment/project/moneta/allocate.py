"""Split an amount by ratios without losing a minor unit."""

from __future__ import annotations

from collections.abc import Sequence

from moneta.money import Money


def allocate(total: Money, ratios: Sequence[int]) -> list[Money]:
    """Split ``total`` in proportion to ``ratios``.

    Each share is rounded down to a whole minor unit and the units left over are
    handed out one by one from the first share on, so the shares always add up
    to ``total``.
    """
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) == 0:
        raise ValueError("ratios must be non-negative and not all zero")
    units = total.minor_units
    whole = sum(ratios)
    shares = [units * r // whole for r in ratios]
    for i in range(units - sum(shares)):
        shares[i % len(shares)] += 1
    return [Money.from_minor(s, total.currency) for s in shares]
