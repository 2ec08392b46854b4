"""The windows, caps and time units the feature blocks share (training and live alike)."""

from __future__ import annotations

NS_PER_SECOND = 1_000_000_000
SECONDS_PER_DAY = 86_400
NS_PER_DAY = SECONDS_PER_DAY * NS_PER_SECOND

HISTORY_LAST_N = 10  # amount_zscore: statistics over the last N previous log-amounts
ZSCORE_STD_FLOOR = 0.1
NOVELTY_WINDOW = 16  # new_values_in_window: last K transactions, the current one included
VELOCITY_WINDOWS_NS = {
    "1h": 3_600 * NS_PER_SECOND,
    "1d": NS_PER_DAY,
    "7d": 7 * NS_PER_DAY,
}
VELOCITY_AMOUNT_WINDOWS = ("1d", "7d")
#: Most events an entity keeps for the velocity windows (the last 7 days): with more events
#: in 7 days than this, count_7d / amount_7d cover its latest VELOCITY_CAP events only, in
#: training as live (a stream of a whole file is one entity).
VELOCITY_CAP = 1024
#: Most distinct values remembered per entity and categorical column (oldest forgotten
#: first); a forgotten value seen again counts as new.
SEEN_CAP = 4096
COUNTERPARTY_WINDOWS_DAYS = (1, 7, 30)
# Counterparty statistics count transactions in hour buckets: a label becomes usable within
# an hour of the delay passing (day buckets would hide up to a day of known labels).
BUCKETS_PER_DAY = 24
COUNTERPARTY_BUCKET_NS = NS_PER_DAY // BUCKETS_PER_DAY


def label_delay_buckets(label_delay_ns: int) -> int:
    """The label delay in whole counterparty buckets (hours), rounded up, at least 0."""
    return max(0, -(-int(label_delay_ns) // COUNTERPARTY_BUCKET_NS))


def delay_buckets_of_days(label_delay_days: float) -> int:
    """`label_delay_buckets` of a label delay given in days (as models store it)."""
    return label_delay_buckets(int(label_delay_days * SECONDS_PER_DAY * NS_PER_SECOND))
