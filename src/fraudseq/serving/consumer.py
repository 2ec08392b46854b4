"""`fraudseq consume`: score transactions read from a Redis Stream with a consumer group.

Several consumer processes, on one host or many, join one consumer group and split the
stream between them; they share account state through the Redis state store, so any
consumer can score any account.

**The stream URL.** ``redis://[user:password@]host:port/db?stream=NAME[&output=NAME]
[&prefix=name:]`` (``rediss://`` for TLS). ``stream`` is the input stream (required),
``output`` the stream results are written to (default ``NAME:results``), ``prefix`` the
state store's key prefix (default ``fraudseq:``; one prefix per model). Other query
parameters go to redis-py. Unless a separate state URL is given, the state lives on the same
server: the stream URL without ``stream`` and ``output``.

**Messages.** Each input entry has a field ``transaction``: the JSON object of one
transaction, with the fields of the HTTP API's ``POST /v1/score`` body. Each output entry
has ``transaction_id``, ``entry`` (the input entry's id) and either ``result`` (the JSON of
the result `Detector.score_batch` returns) or ``error`` (why the entry could not be scored:
not JSON, not a valid transaction, outside the clock's window, an id reused with other
content). Entries with an error are acknowledged like the others: bad input never stops the
loop, and the error is in the output stream for whoever reads it.

**Exactly once.** The loop reads a batch with XREADGROUP, scores it with
`Detector.score_batch` (which stores the account states and one record per transaction id
in one atomic unit), then, in one Lua script (atomic in Redis), acknowledges each input entry
with XACK and writes its output entry with XADD *only if that XACK acknowledged it*. So:

- a consumer that dies before the script ran leaves its entries pending; another consumer
  claims them (XAUTOCLAIM, once they have been idle for ``claim_idle_ms``) and scores them
  again. Those already stored return their stored result (the transaction id is the
  idempotency key: nothing is counted twice in the account's state), and the script writes
  them to the output once;
- a consumer that dies after the script ran has written and acknowledged them together;
- a consumer that was only slow, whose entries another claimed and finished meanwhile,
  finds them acknowledged: its XACK returns 0, and it writes nothing.

Every transaction is therefore stored once and appears once in the output stream. (A plain
MULTI/EXEC of XADD + XACK would give "both or neither" but not the third case.)

**Order.** A consumer group hands entries to whichever consumer asks; it keeps no order per
account. Entries of one account read by two consumers at the same moment, or left pending
by a dead consumer while later ones were scored, reach the state out of time order. The
detector inserts a late transaction into its account's history (within a day), so the state
and every later score are those of time order; the later transaction scored before it keeps
the score it got without it. With events of an account seconds apart or more, as in live
traffic, this is rare; it is what a crash costs.

**Crash recovery.** On start, and every ``claim_idle_ms / 2`` (at least once a second)
while running, a consumer claims with XAUTOCLAIM the entries pending longer than
``claim_idle_ms`` for any consumer of the group (a dead one's) and scores them first.
Entries whose payload was deleted meanwhile (XDEL, trimming) are acknowledged.

**Failures.** A transient state store or Redis error (unreachable, loading, read-only
during a failover) acknowledges nothing: the consumer backs off (0.1 s doubling to 10 s) and
retries the same entries. A permanent one (refused credentials, a bad database) stops it
with the error, its entries pending for the next consumer. So does any other error (a bug,
a model that gives NaN): such an entry would stop every consumer that claims it, so these
are left loud rather than turned into error entries. SIGTERM and SIGINT finish the current
batch, then the loop returns.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.redaction import redact
from fraudseq.serving.detector import ConflictError, Detector
from fraudseq.serving.stores import StateStoreError
from fraudseq.serving.stores.redis import _permanent

log = logging.getLogger("fraudseq")

#: The input entry's field holding the transaction's JSON.
TRANSACTION_FIELD = "transaction"
#: Seconds between progress lines.
PROGRESS_SECONDS = 10.0
#: Backoff after a transient error: from this many seconds, doubling, up to MAX_BACKOFF.
FIRST_BACKOFF, MAX_BACKOFF = 0.1, 10.0

# Acknowledge and write, atomically. KEYS: the input stream, the output stream. ARGV: the
# group, then per entry its id, its number of fields and the fields (name, value, ...).
# An entry is written only if this XACK acknowledged it (see the module docstring).
_ACK_AND_WRITE = """
local written = 0
local i = 2
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    local fields = {}
    for j = 1, 2 * n do fields[j] = ARGV[i + 1 + j] end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    written = written + 1
  end
  i = i + 2 + 2 * n
end
return written
"""


@dataclass(frozen=True)
class StreamAddress:
    """A parsed ``--stream`` URL: where to connect, the input and output streams, and the
    state store URL it implies (same server, ``prefix`` kept)."""

    redis_url: str  # the connection: the URL without stream, output and prefix
    stream: str
    output: str
    state_url: str  # the URL without stream and output

    @classmethod
    def parse(cls, url: str) -> StreamAddress:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise FraudseqError(
                f"--stream {redact(url)!r}: expected redis://host:port/db?stream=NAME "
                f"(or rediss:// for TLS)"
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        options = dict(query)
        stream = options.get("stream", "").strip()
        if not stream:
            raise FraudseqError(
                f"--stream {redact(url)!r} names no stream; add ?stream=NAME, e.g. "
                f"redis://127.0.0.1:6379/0?stream=transactions"
            )
        output = options.get("output", "").strip() or f"{stream}:results"
        if output == stream:
            raise FraudseqError(f"--stream: the output stream must differ from {stream!r}")
        ours = ("stream", "output")

        def without(names: tuple[str, ...]) -> str:
            kept = [q for q in query if q[0] not in names]
            return urlunsplit(parts._replace(query=urlencode(kept, safe=":")))

        state, connection = without(ours), without((*ours, "prefix"))
        return cls(redis_url=connection, stream=stream, output=output, state_url=state)


def default_consumer_name() -> str:
    """hostname-pid: unique among live processes, so a restarted process is a new consumer
    (the dead one's pending entries are claimed by XAUTOCLAIM)."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ConsumerStats:
    """What a consumer did: entries read (claimed ones included), transactions scored (new
    or answered from their stored result), error entries, entries claimed from other
    consumers, output entries written, transient failures retried, batch commits the store
    refused because another consumer changed one of the batch's accounts meanwhile (the
    batch is then read and computed again: the cost of consumers sharing accounts), and the
    wall-clock times
    of its first read entry and its last acknowledgement (None before any)."""

    read: int = 0
    scored: int = 0
    errors: int = 0
    claimed: int = 0
    written: int = 0
    retries: int = 0
    store_conflicts: int = 0
    first_entry_at: float | None = None
    last_ack_at: float | None = None
    #: This process's CPU time (time.process_time) at the same two moments.
    first_entry_cpu: float | None = None
    last_ack_cpu: float | None = None
    _progress: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        if self.first_entry_at is not None and self.last_ack_at is not None:
            out["seconds"] = round(self.last_ack_at - self.first_entry_at, 6)
            out["cpu_seconds"] = round(self.last_ack_cpu - self.first_entry_cpu, 6)
        return out


class StreamConsumer:
    """The consumer loop of one process: read, score, acknowledge-and-write, claim.

    `client` is a redis-py client for the streams (`StreamAddress.redis_url`); `detector`
    scores (its store is normally the Redis store on the same server). `max_idle_s`: return
    once no entry arrived for that long and none is pending in the group (backfills,
    tests); None runs until `stop()` (a signal)."""

    def __init__(
        self,
        detector: Detector,
        client,
        *,
        stream: str,
        output: str,
        group: str,
        consumer: str | None = None,
        batch: int = 100,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_idle_s: float | None = None,
    ) -> None:
        if batch < 1:
            raise FraudseqError(f"batch must be >= 1, got {batch}")
        self.detector = detector
        self.client = client
        self.stream, self.output, self.group = stream, output, group
        self.consumer = consumer or default_consumer_name()
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = max(claim_idle_ms / 2000, 1.0)
        self.max_idle_s = max_idle_s
        self.stats = ConsumerStats()
        self._stopping = False
        self._ack_and_write = client.register_script(_ACK_AND_WRITE)
        import redis

        self._redis_errors = redis.exceptions

    # -- control ---------------------------------------------------------------------------
    def stop(self, *_signal) -> None:
        """Finish the current batch, then return from `run` (a signal handler)."""
        if not self._stopping:
            log.info("consumer %s: stopping after the current batch", self.consumer)
        self._stopping = True

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing, reading from the stream's start
        (id 0): a group created after producers started still sees every entry."""

        def create() -> None:
            try:
                self.client.xgroup_create(self.stream, self.group, "0", mkstream=True)
            except self._redis_errors.ResponseError as err:
                if "BUSYGROUP" not in str(err):  # BUSYGROUP: it exists
                    raise

        self._redis(create)

    def run(self) -> ConsumerStats:
        """Consume until stopped (or drained, with `max_idle_s`); returns the stats."""
        self.ensure_group()
        log.info(
            "consumer %s of group %s: %s -> %s, batch %d",
            self.consumer, self.group, self.stream, self.output, self.batch,
        )  # fmt: skip
        last_claim = -float("inf")
        last_entry = time.monotonic()
        self.stats._progress.update(at=time.monotonic(), read=0)
        while not self._stopping:
            now = time.monotonic()
            if now - last_claim >= self.claim_every_s:
                last_claim = now
                if self.claim():
                    last_entry = time.monotonic()
            entries = self._read()
            if entries:
                self.process(entries)
                last_entry = time.monotonic()
            elif self._drained(last_entry):
                break
            self._progress()
        self._progress(final=True)
        return self.stats

    # -- one step ----------------------------------------------------------------------------
    def claim(self) -> int:
        """Claim and process the group's entries pending longer than `claim_idle_ms` (this
        consumer's own from before a restart under the same name included). Returns how
        many were claimed."""
        total, start = 0, "0-0"
        while not self._stopping:
            reply = self._redis(
                lambda s=start: self.client.xautoclaim(
                    self.stream, self.group, self.consumer, self.claim_idle_ms, s, self.batch
                )
            )
            if reply is None:  # stopped while Redis was failing
                break
            start, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # their payload is gone: nothing to score, acknowledge them
                self._redis(lambda d=deleted: self.client.xack(self.stream, self.group, *d))
            live = [(i, f) for i, f in entries if f is not None]
            if live:
                log.info("consumer %s: claimed %d pending entries", self.consumer, len(live))
                self.stats.claimed += len(live)
                total += len(live)
                self.process(live)
            if start in (b"0-0", "0-0"):
                break
        return total

    def process(self, entries: list[tuple]) -> int:
        """Score the entries [(id, fields)], then acknowledge and write them; returns how
        many output entries were written (fewer when another consumer finished some)."""
        if self.stats.first_entry_at is None:
            self.stats.first_entry_at, self.stats.first_entry_cpu = time.time(), time.process_time()
        self.stats.read += len(entries)
        outputs = self._score(entries)
        if outputs is None:  # stopped while a store was failing: nothing acknowledged
            return 0
        args = [self.group]
        for entry_id, fields in outputs:
            args += [entry_id, len(fields) // 2, *fields]
        written = self._redis(
            lambda: self._ack_and_write(keys=[self.stream, self.output], args=args),
            retry_while_stopping=True,
        )
        self.stats.written += int(written or 0)
        self.stats.store_conflicts = getattr(self.detector.store, "conflicts", 0)
        self.stats.last_ack_at, self.stats.last_ack_cpu = time.time(), time.process_time()
        return written

    def _score(self, entries: list[tuple]) -> list[tuple] | None:
        """[(entry id, output fields)] in entry order: a result or an error for each."""
        outputs: dict[int, list] = {}
        valid: list[tuple[int, dict]] = []
        for k, (entry_id, fields) in enumerate(entries):
            tx, problem = _transaction(fields)
            if problem is not None:
                outputs[k] = self._error(entry_id, tx, problem)
            else:
                valid.append((k, tx))
        if valid:
            results = self._with_retries(lambda: self._score_valid([tx for _, tx in valid]))
            if results is None:
                return None
            for (k, tx), result in zip(valid, results, strict=True):
                entry_id = entries[k][0]
                if isinstance(result, Exception):
                    outputs[k] = self._error(entry_id, tx, str(result))
                else:
                    self.stats.scored += 1
                    outputs[k] = [
                        "transaction_id", str(result["transaction_id"]),
                        "entry", _text(entry_id),
                        "result", json.dumps(result, separators=(",", ":")),
                    ]  # fmt: skip
        return [(entries[k][0], outputs[k]) for k in range(len(entries))]

    def _score_valid(self, txs: list[dict]) -> list:
        """score_batch; if it refuses the batch for one transaction (invalid, outside the
        clock's window, a conflicting id), each is scored alone, so the others are scored
        and the refused ones get their error. Store errors propagate (nothing is written
        when score_batch refuses, so scoring one at a time gives the batch's results)."""
        try:
            return self.detector.score_batch(txs)
        except (DataValidationError, ConflictError):
            pass
        out: list = []
        for tx in txs:
            try:
                out.append(self.detector.score(tx))
            except (DataValidationError, ConflictError) as err:
                out.append(err)
        return out

    def _error(self, entry_id, tx, problem: str) -> list:
        self.stats.errors += 1
        tx_id = tx.get(self.detector.schema.id_column) if isinstance(tx, dict) else None
        message = redact(problem)
        log.warning("entry %s: %s", _text(entry_id), message)
        return [
            "transaction_id", "" if tx_id is None else str(tx_id),
            "entry", _text(entry_id),
            "error", message,
        ]  # fmt: skip

    # -- Redis and retries ---------------------------------------------------------------
    def _read(self) -> list[tuple]:
        reply = self._redis(
            lambda: self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=self.batch,
                block=self.block_ms,
            )
        )
        if not reply:
            return []
        return reply[0][1]

    def _drained(self, last_entry: float) -> bool:
        """With `max_idle_s`: no entry for that long and none pending in the group (a
        dead consumer's are claimed first, once idle for `claim_idle_ms`)."""
        if self.max_idle_s is None or time.monotonic() - last_entry < self.max_idle_s:
            return False
        return self._pending() == 0

    def _pending(self) -> int:
        reply = self._redis(lambda: self.client.xpending(self.stream, self.group))
        return -1 if reply is None else int(reply["pending"])

    def _redis(self, call, *, retry_while_stopping: bool = False):
        """`call()` with transient Redis errors retried after a backoff. A stop request
        interrupts the retries (returning None) unless `retry_while_stopping`: an
        acknowledgement of scored entries is worth finishing."""
        errors = self._redis_errors

        def attempt():
            try:
                return call()
            except errors.RedisError as err:
                # The state store's classification: refused credentials and error replies
                # other than a failover's, a busy script's or a full memory's are permanent.
                permanent = _permanent(err, errors)
                if permanent and isinstance(err, errors.ResponseError):
                    raise  # e.g. NOGROUP (the group was deleted): an operator's change
                raise StateStoreError(
                    f"stream {self.stream!r}: Redis error: {redact(str(err))}",
                    permanent=permanent,
                ) from None

        return self._with_retries(attempt, retry_while_stopping=retry_while_stopping)

    def _with_retries(self, call, *, retry_while_stopping: bool = False):
        """`call()`, retried after a transient StateStoreError with a doubling backoff;
        a permanent one is raised. None if stopped while retrying."""
        delay = FIRST_BACKOFF
        while True:
            try:
                return call()
            except StateStoreError as err:
                if err.permanent:
                    raise
                if self._stopping and not retry_while_stopping:
                    return None
                self.stats.retries += 1
                log.warning("%s; retrying in %.1f s", redact(str(err)), delay)
                end = time.monotonic() + delay
                while time.monotonic() < end and (retry_while_stopping or not self._stopping):
                    time.sleep(min(0.1, delay))
                delay = min(2 * delay, MAX_BACKOFF)

    def _progress(self, *, final: bool = False) -> None:
        state = self.stats._progress
        now = time.monotonic()
        if not final and now - state["at"] < PROGRESS_SECONDS:
            return
        rate = (self.stats.read - state["read"]) / max(now - state["at"], 1e-9)
        stats = self.stats
        log.info(
            "consumer %s: %s %d entries (%d scored, %d errors, %d claimed), %.0f/s",
            self.consumer, "done:" if final else "read", stats.read, stats.scored,
            stats.errors, stats.claimed, rate,
        )  # fmt: skip
        state.update(at=now, read=stats.read)


def _transaction(fields: dict) -> tuple[dict | None, str | None]:
    """The entry's transaction, or the reason it has none."""
    raw = fields.get(TRANSACTION_FIELD.encode(), fields.get(TRANSACTION_FIELD))
    if raw is None:
        names = ", ".join(sorted(_text(k) for k in fields)) or "none"
        return None, f"no {TRANSACTION_FIELD!r} field (fields: {names})"
    try:
        tx = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"the {TRANSACTION_FIELD!r} field is not JSON: {err}"
    if not isinstance(tx, dict):
        return None, f"the {TRANSACTION_FIELD!r} field is not a JSON object"
    return tx, None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
