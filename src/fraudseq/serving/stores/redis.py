"""State in Redis, for several workers or hosts scoring the same accounts.

Keys (``prefix`` defaults to ``fraudseq:``): ``{prefix}a:{entity}`` the account's state
bytes, ``{prefix}t:{transaction id}`` the transaction record (JSON), ``{prefix}c:{counterparty}``
a hash of ``{bucket}:n`` / ``{bucket}:f`` counters per hour bucket, ``{prefix}labels:all`` a
hash of labels, ``{prefix}labels:at`` a hash of their arrival times (Unix seconds),
``{prefix}h:all`` the history log (a sorted set of entries scored by the hour bucket of their
newest transaction, so retention is one ZREMRANGEBYSCORE) and ``{prefix}meta:all`` a hash of
fingerprints.

A score reads the record, the account and the counterparty's buckets in one round trip, computes
the features and the model's score in Python, then commits with a Lua script (atomic in
Redis) that checks the record is still absent and the account is still byte-for-byte what was
read; if another worker changed the account meanwhile, nothing is written and the score is
read and computed again. Counters are incremented inside the same script, so no event and no
count is lost under contention. Feedback is a WATCH/MULTI transaction on the record.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fraudseq.errors import FraudseqError
from fraudseq.redaction import redact
from fraudseq.serving.stores.base import (
    BatchSnapshot,
    BatchUpdate,
    BucketTable,
    History,
    LabelChange,
    Snapshot,
    StateStoreError,
    Update,
    counterparty_totals,
    dumps,
    history_limit,
    history_text,
    in_range,
    label_delta,
    purge_limit,
)

MAX_ATTEMPTS = 1_000

_COMMIT = """
local rec = redis.call('GET', KEYS[1])
if rec then return {1, rec} end
local cur = redis.call('GET', KEYS[2])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return {2} end
elseif cur then
  return {2}
end
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[5], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[5])
end
if ARGV[3] == '1' then
  if ttl > 0 then
    redis.call('SET', KEYS[2], ARGV[4], 'EX', ttl)
  else
    redis.call('SET', KEYS[2], ARGV[4])
  end
end
if ARGV[7] ~= '' then
  local bucket = tonumber(ARGV[7])
  local n = redis.call('HINCRBY', KEYS[3], ARGV[7] .. ':n', 1)
  if n == 1 and ARGV[8] ~= '' then
    local limit = tonumber(ARGV[8])
    for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
      local b = tonumber(string.match(field, '^(-?%d+):'))
      if b and b < limit and b ~= bucket then redis.call('HDEL', KEYS[3], field) end
    end
  end
end
if ARGV[9] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[9])
  if ARGV[11] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[11]) end
end
return {0}
"""


# Batch commit. KEYS: n record keys, a account keys, c counterparty keys. ARGV[1..6]:
# n, a, c, ttl, the oldest bucket kept ('' = prune nothing), number of counter increments;
# then per record its JSON; per
# account its expected SHA-1 ('' = absent), whether to write it, and its new bytes; per
# increment the counterparty's index (1-based among the c keys), the bucket and the count;
# then the history log's entry ('' = none), its bucket and the oldest bucket it keeps ('' =
# prune nothing), written to the last key.
_COMMIT_BATCH = """
local n, a, c = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, limit, k = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 1 end
end
local base = 6 + n
for j = 1, a do
  local cur = redis.call('GET', KEYS[n + j])
  local expected = ARGV[base + 3 * (j - 1) + 1]
  if expected == '' then
    if cur then return 2 end
  elseif (not cur) or redis.sha1hex(cur) ~= expected then
    return 2
  end
end
for i = 1, n do
  if ttl > 0 then
    redis.call('SET', KEYS[i], ARGV[6 + i], 'EX', ttl)
  else
    redis.call('SET', KEYS[i], ARGV[6 + i])
  end
end
for j = 1, a do
  if ARGV[base + 3 * (j - 1) + 2] == '1' then
    local value = ARGV[base + 3 * (j - 1) + 3]
    if ttl > 0 then
      redis.call('SET', KEYS[n + j], value, 'EX', ttl)
    else
      redis.call('SET', KEYS[n + j], value)
    end
  end
end
base = base + 3 * a
for q = 1, k do
  local key = KEYS[n + a + tonumber(ARGV[base + 3 * (q - 1) + 1])]
  local bucket = ARGV[base + 3 * (q - 1) + 2]
  local count = tonumber(ARGV[base + 3 * (q - 1) + 3])
  local total = redis.call('HINCRBY', key, bucket .. ':n', count)
  if total == count and limit then
    for _, field in ipairs(redis.call('HKEYS', key)) do
      local b = tonumber(string.match(field, '^(-?%d+):'))
      if b and b < limit and b ~= tonumber(bucket) then redis.call('HDEL', key, field) end
    end
  end
end
base = base + 3 * k
if ARGV[base + 1] ~= '' then
  local log, oldest = KEYS[n + a + c + 1], ARGV[base + 3]
  redis.call('ZADD', log, ARGV[base + 2], ARGV[base + 1])
  if oldest ~= '' then redis.call('ZREMRANGEBYSCORE', log, '-inf', '(' .. oldest) end
end
return 0
"""


class RedisStore:
    """State in Redis; any number of processes may share it."""

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: int | None = None,
        retention_buckets: int | None = None,
        prefix: str = "fraudseq:",
        client=None,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise FraudseqError(
                "the Redis state store needs redis-py: pip install 'redis>=5'"
            ) from None
        self._redis = redis
        self.url = redact(url)  # for messages and logs: the password masked
        self.ttl = ttl_seconds
        self.retention_buckets = retention_buckets
        #: The history log's retention in hour buckets (set by the Detector; None or 0: no log).
        self.history_buckets: int | None = None
        #: Counterparty buckets are pruned by this clock (`base.purge_limit`).
        self.clock: Callable[[], int | None] | None = None
        self.prefix = prefix
        parts = urlsplit(url)  # ?prefix= is ours; other query options go to redis-py
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "prefix"])
        options = {"socket_timeout": 10, "socket_connect_timeout": 5}
        self._client = client or redis.Redis.from_url(
            urlunsplit(parts._replace(query=query)), **options
        )
        self._commit = self._client.register_script(_COMMIT)
        self._commit_batch = self._client.register_script(_COMMIT_BATCH)
        self._closed = False
        self.conflicts = 0  # commits refused because the account changed (then retried)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    def _failure(self, err: Exception) -> StateStoreError:
        """A StateStoreError for a redis-py error, its text redacted; permanent when a retry
        cannot help (see `_permanent`)."""
        exceptions = self._redis.exceptions
        permanent = _permanent(err, exceptions)
        down = not permanent and isinstance(
            err, exceptions.ConnectionError | exceptions.TimeoutError
        )
        message = f"{self.url}: Redis {'unavailable' if down else 'error'}: {redact(str(err))}"
        if permanent:
            message += (
                ". A permanent fault: retrying will not help. Fix: the credentials, the "
                "database number or the server's configuration in the state URL"
            )
        return StateStoreError(message, permanent=permanent)

    @property
    def _errors(self) -> type[Exception]:
        """Every redis-py error: unreachable, timed out, or refused (e.g. a DB index out of
        range, out of memory, a read-only replica)."""
        return self._redis.exceptions.RedisError

    # -- scoring -------------------------------------------------------------------------
    def transact(self, tx_id, entity, counterparty, buckets, compute) -> Update:
        self._check_open()
        t_key, a_key = self._key("t", tx_id), self._key("a", entity)
        c_key = self._key("c", counterparty) if counterparty is not None else t_key
        read_buckets = counterparty is not None and bool(buckets)
        try:
            for _ in range(MAX_ATTEMPTS):
                pipe = self._client.pipeline(transaction=False)
                pipe.get(t_key)
                pipe.get(a_key)
                if read_buckets:
                    pipe.hgetall(c_key)
                values = pipe.execute()
                record, account = values[0], values[1]
                totals = counterparty_totals(
                    in_range(_buckets(values[2]), buckets) if read_buckets else {}, buckets
                )
                update = compute(
                    Snapshot(
                        record=json.loads(record) if record is not None else None,
                        account=account,
                        counterparty=totals,
                    )
                )
                if update.record is None:
                    return update
                bucket = update.counterparty_bucket
                outcome = self._commit(
                    keys=[t_key, a_key, c_key, self._key("h", "all")],
                    args=[
                        "1" if account is not None else "0",
                        account if account is not None else b"",
                        "1" if update.account is not None else "0",
                        update.account if update.account is not None else b"",
                        update.record_text(),
                        self.ttl or 0,
                        str(bucket) if counterparty is not None and bucket is not None else "",
                        _limit_arg(self.clock, self.retention_buckets),
                        *self._history_args(update),
                    ],
                )
                status = int(outcome[0])
                if status == 0:
                    return update
                if status == 1:
                    # Another worker committed this id meanwhile: computing against its record
                    # returns the stored result (same content) or raises ConflictError.
                    return compute(Snapshot(record=json.loads(outcome[1]), account=None))
                self.conflicts += 1  # the account changed since it was read: read again
            raise StateStoreError(
                f"{self.url}: account {entity!r} changed under {MAX_ATTEMPTS} consecutive "
                f"attempts to score {tx_id!r}; too much contention on one account"
            )
        except self._errors as err:
            raise self._failure(err) from None

    def transact_batch(self, tx_ids, entities, counterparties, buckets, compute) -> BatchUpdate:
        """Read everything in one pipeline, compute, and commit with one Lua script that
        writes nothing unless no record was created and no account changed meanwhile
        (accounts are compared by SHA-1); otherwise read and compute again."""
        self._check_open()
        t_keys = [self._key("t", i) for i in tx_ids]
        a_keys = [self._key("a", e) for e in entities]
        c_keys = [self._key("c", c) for c in counterparties]
        try:
            for _ in range(MAX_ATTEMPTS):
                pipe = self._client.pipeline(transaction=False)
                pipe.mget(t_keys)
                pipe.mget(a_keys)
                if buckets is not None:
                    for key in c_keys:
                        pipe.hgetall(key)
                values = pipe.execute()
                records = {i: json.loads(v) for i, v in zip(tx_ids, values[0], strict=True) if v}
                accounts = {e: v for e, v in zip(entities, values[1], strict=True) if v is not None}
                read = {
                    cp: found
                    for cp, stored in zip(counterparties, values[2:], strict=False)
                    if (found := in_range(_buckets(stored), buckets))
                }
                update = compute(BatchSnapshot(records, accounts, BucketTable.from_dicts(read)))
                if not update.records:
                    return update
                record_keys = [self._key("t", tx_id) for tx_id, _, _, _ in update.records]
                args: list = [
                    len(record_keys), len(a_keys), len(c_keys), self.ttl or 0,
                    _limit_arg(self.clock, self.retention_buckets),
                    len(update.counterparty_buckets),
                ]  # fmt: skip
                args += [text for _, _, _, text in update.records]
                for entity in entities:
                    current = accounts.get(entity)
                    new = update.accounts.get(entity)
                    args += [
                        hashlib.sha1(current).hexdigest() if current is not None else "",
                        "1" if new is not None else "0",
                        new if new is not None else b"",
                    ]
                position = {cp: i + 1 for i, cp in enumerate(counterparties)}
                for (cp, bucket), count in update.counterparty_buckets.items():
                    args += [position[cp], bucket, count]
                args += self._history_args(update)
                keys = record_keys + a_keys + c_keys + [self._key("h", "all")]
                status = int(self._commit_batch(keys=keys, args=args))
                if status == 0:
                    return update
                self.conflicts += 1  # a record or an account changed meanwhile: again
            raise StateStoreError(
                f"{self.url}: accounts changed under {MAX_ATTEMPTS} consecutive attempts to "
                f"score a batch of {len(tx_ids)}; too much contention"
            )
        except self._errors as err:
            raise self._failure(err) from None

    # -- feedback ------------------------------------------------------------------------
    def label(self, tx_id: str, label: int) -> LabelChange | None:
        self._check_open()
        t_key = self._key("t", tx_id)
        outcome: list = []

        def apply(pipe) -> None:
            outcome.clear()
            text = pipe.get(t_key)
            if text is None:
                return
            record = json.loads(text)
            previous = record.get("label")
            changed = previous != label
            cp = record.get("counterparty") if record.get("counted") else None
            delta = label_delta(previous, label) if changed else 0
            # A bucket pruned meanwhile (older than the retention) is not brought back.
            bucket = (
                cp is not None and delta and pipe.hexists(self._key("c", cp), f"{record['day']}:n")
            )
            pipe.multi()
            pipe.hset(self._key("labels", "all"), tx_id, label)
            pipe.hset(self._key("labels", "at"), tx_id, repr(time.time()))
            if changed:
                record["label"] = label
                pipe.set(t_key, dumps(record), keepttl=True)
                if bucket:
                    pipe.hincrby(self._key("c", cp), f"{record['day']}:f", delta)
            outcome.append(LabelChange(previous, changed))

        try:
            self._client.transaction(apply, t_key)
        except self._errors as err:
            raise self._failure(err) from None
        return outcome[0] if outcome else None

    # -- the rest ------------------------------------------------------------------------
    def meta(self, key: str, value: str) -> str:
        self._check_open()
        try:
            meta = self._key("meta", "all")
            self._client.hsetnx(meta, key, value)
            return self._client.hget(meta, key).decode()
        except self._errors as err:
            raise self._failure(err) from None

    def account(self, entity: str) -> bytes | None:
        return self._client.get(self._key("a", entity))

    def record(self, tx_id: str) -> dict | None:
        text = self._client.get(self._key("t", tx_id))
        return json.loads(text) if text is not None else None

    def labels(self) -> dict[str, int]:
        stored = self._client.hgetall(self._key("labels", "all"))
        return {k.decode(): int(v) for k, v in stored.items()}

    def _history_args(self, update) -> list:
        """The commit scripts' history arguments: the entry ('' for none), its bucket and
        the oldest bucket the log keeps ('' for no pruning)."""
        if update.history is None:
            return ["", 0, ""]
        limit = history_limit(self)
        return [history_text(update), update.history_bucket, "" if limit is None else str(limit)]

    def history(self) -> History:
        self._check_open()
        try:
            pipe = self._client.pipeline(transaction=True)  # one moment: MULTI/EXEC
            pipe.zrange(self._key("h", "all"), 0, -1)
            pipe.hgetall(self._key("labels", "all"))
            pipe.hgetall(self._key("labels", "at"))
            pipe.hgetall(self._key("meta", "all"))
            entries, labels, times, meta = pipe.execute()
        except self._errors as err:
            raise self._failure(err) from None
        return History(
            [entry.decode() for entry in entries],
            {k.decode(): int(v) for k, v in labels.items()},
            {k.decode(): float(v) for k, v in times.items()},
            {k.decode(): v.decode() for k, v in meta.items()},
        )

    def counterparty_buckets(self, counterparty: str) -> dict[int, tuple[int, int]]:
        """The counterparty's stored {hour bucket: (count, frauds)}."""
        return _buckets(self._client.hgetall(self._key("c", counterparty)))

    def clear(self) -> int:
        """Delete every key under this store's prefix (tests); returns how many."""
        keys = list(self._client.scan_iter(match=f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            self._client.delete(*keys[start : start + 1000])
        return len(keys)

    def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(self._client.ping())
        except self._errors:
            return False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    def _check_open(self) -> None:
        if self._closed:  # the server is stopping: not the client's fault (503, not 400)
            raise StateStoreError(f"{self.url}: the state store is closed")


#: Redis error replies that pass (a failover, loading, a busy script, memory freed by
#: evictions); any other error reply (an unknown database index, a wrong type, a missing
#: command) comes back on every retry.
_TRANSIENT_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "OOM", "READONLY")


def _permanent(err: Exception, exceptions) -> bool:
    """Whether a redis-py error needs an operator: refused credentials or permissions, or an
    error reply that is not one of _TRANSIENT_REPLIES. Unreachable, timed out, loading, out
    of memory, read-only (a replica during a failover) are transient."""
    refused = (exceptions.AuthenticationError, exceptions.AuthorizationError)
    if isinstance(err, refused + (exceptions.NoPermissionError,)):
        return True
    if isinstance(err, exceptions.ConnectionError | exceptions.TimeoutError):
        return False
    if isinstance(
        err,
        exceptions.ReadOnlyError
        | exceptions.OutOfMemoryError
        | exceptions.TryAgainError
        | exceptions.ClusterDownError,
    ):
        return False
    if isinstance(err, exceptions.ResponseError):
        return not str(err).upper().startswith(_TRANSIENT_REPLIES)
    return False


def _limit_arg(clock, retention: int | None) -> str:
    """The commit scripts' argument: the oldest counterparty bucket kept, '' for none."""
    limit = purge_limit(clock, retention)
    return "" if limit is None else str(limit)


def _buckets(stored: dict) -> dict[int, tuple[int, int]]:
    """(count, frauds) by bucket from a counterparty hash of `{bucket}:n` / `{bucket}:f`
    fields. The hash is read whole (HGETALL): it holds only buckets that have transactions,
    pruned to the retention, far fewer than the hundreds of hour buckets a 30-day range
    spans."""
    out: dict[int, list[int]] = {}
    for field, value in stored.items():
        bucket, kind = field.decode().split(":")
        out.setdefault(int(bucket), [0, 0])[0 if kind == "n" else 1] = int(value)
    return {b: (v[0], v[1]) for b, v in out.items()}
