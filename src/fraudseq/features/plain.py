"""What a feature's value means in plain units, for explanations and reports."""

from __future__ import annotations

import math
import re

# What the log-scaled features count, for people: sign(v) * expm1(|v|) of each undoes its
# (signed) log1p. Patterns are tried in order.
_PLAIN = [
    (r"count_(\w+)", "{:.0f} earlier transactions in the last {}"),
    (r"amount_(\d+[hd])", "{:.2f} spent in the last {}"),
    (r"cp_count_(\w+)", "{:.0f} counterparty transactions in its {} window"),
    (r"n_previous", "{:.0f} earlier transactions"),
    (r"log_gap_seconds", "{:.0f} s since the previous transaction, 0 if there is none"),
    (r"log_amount", "amount {:.2f}"),
]


def plain_quantity(name: str, value: float) -> str | None:
    """What a log-scaled feature's value means in plain units ("3 earlier transactions in
    the last 1h" for count_1h = 1.386), or None for a feature that is not log-scaled."""
    for pattern, text in _PLAIN:
        match = re.fullmatch(pattern, name)
        if match:
            quantity = math.copysign(math.expm1(abs(value)), value)
            return text.format(quantity, *match.groups())
    return None
