"""`fraudseq consume`: score transactions read from a Redis Stream with a consumer group.

Several consumer processes, on one host or many, join one consumer group and split the
stream between them; they share account state through the Redis state store, so any
consumer can score any account.

**The stream URL.** ``redis://[user:password@]host:port/db?stream=NAME[&output=NAME]
[&prefix=name:][&partitions=P]`` (``rediss://`` for TLS). ``stream`` is the input stream
(required), ``output`` the stream results are written to (default ``NAME:results``),
``prefix`` the state store's key prefix (default ``fraudseq:``; one prefix per model),
``partitions`` the number of partition streams (default 1: the one stream ``NAME``; see
Partitions). Other query
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

**Partitions: per-account order.** With ``partitions=P`` (P > 1) the input is the P streams
``NAME:0`` .. ``NAME:{P-1}``, each with the consumer group. Producers write each transaction
to partition `partition_of` (CRC-32 of the UTF-8 entity key, mod P; `produce` does it), so
all of an account's events are in one partition, in the order the producer wrote them. Each
partition is read by one consumer at a time, in stream order, so an account's events are
scored in that order and two consumers never touch one account (no store conflicts). If
producers write each account's events in time order, every score is that of time order.

Ownership is a lease per partition, all in Redis, all changed by Lua scripts (atomic):

- keys ``NAME:lease:GROUP:p`` (value: the owning consumer's name, with a TTL of
  ``lease_ms``) and ``NAME:consumers:GROUP`` (a sorted set: each live consumer with the
  server time its heartbeat expires; dead members are dropped by whoever next looks);
- every loop, the balance script refreshes this consumer's heartbeat, counts the live
  consumers n, and with share = ceil(P / n): renews the leases it holds, releases those
  beyond the share (highest partitions first; nothing of them is in flight between loops),
  and takes free ones (``SET NX PX``) up to the share. A newcomer is therefore given
  partitions within one loop of the holders; a dead consumer's partitions are free once its
  leases expire (``lease_ms`` after its last renewal), and the live ones take them;
- every read, claim and acknowledgement goes through a script that first checks that the
  partition's lease still names this consumer (and renews it): XREADGROUP and XAUTOCLAIM of
  a partition whose lease passed to another do nothing, and the ack-and-write script
  refuses (nothing acknowledged, nothing written; `ConsumerStats.leases_lost`). So a
  consumer paused past its lease (GC, SIGSTOP, a network partition) cannot read, claim or
  write a partition after its new owner took it; at most it scores again entries the new
  owner also scores, and the transaction id makes that a replay of the stored result;
- on taking a partition the consumer first claims that partition's pending entries (the
  previous owner's, dead or paused: XAUTOCLAIM with min-idle 0) and processes them in id
  order, then reads new ones (``>``). The pending entries are all older than any entry not
  yet delivered, so the partition's order holds across the takeover;
- on a clean exit (SIGTERM, drained) the consumer deletes its leases and heartbeat, so the
  others take its partitions at once.

``lease_ms`` must exceed a loop (a blocking wait of ``block_ms`` plus scoring a batch per
held partition) with margin: a consumer slower than its lease loses the partition (safe,
but its batch is scored again by the new owner). ``claim_idle_ms`` is not used with
partitions: pending entries are claimed on takeover. The number of partitions bounds the
number of busy consumers; choose P as a multiple of the consumers you expect, and keep it:
changing P moves accounts between partitions (drain the streams first).

**Crash recovery.** (Without partitions; with them, see above.) On start, and every
``claim_idle_ms / 2`` (at least once a second) while running, a consumer claims with
XAUTOCLAIM the entries pending longer than ``claim_idle_ms`` for any consumer of the group
(a dead one's) and scores them first.
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
import zlib
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

# Acknowledge and write, atomically. KEYS: the input stream, the output stream, and with
# partitions the partition's lease key. ARGV: the group, this consumer, the lease in ms, then
# per entry its id, its number of fields and the fields (name, value, ...). An entry is
# written only if this XACK acknowledged it (see the module docstring). With a lease key:
# nothing is acknowledged or written, and -1 returned, unless the lease names this consumer
# (it is renewed then).
_ACK_AND_WRITE = """
if #KEYS > 2 then
  if redis.call('GET', KEYS[3]) ~= ARGV[2] then return -1 end
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
local written = 0
local i = 4
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

# Heartbeat and partition leases. KEYS: the heartbeat sorted set (member: consumer, score:
# when its heartbeat expires, ms of the server's clock), then the P lease keys in partition
# order. ARGV: this consumer, the lease in ms, the mode: 'renew' (heartbeat, renew own
# leases) or 'balance' (also release own leases beyond the fair share, the highest
# partitions first, and take free ones up to it, the lowest first). Returns {owned partitions,
# partitions taken now} (0-based).
_BALANCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, lease = ARGV[1], tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, me)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], 2 * lease)
local partitions = #KEYS - 1
local share = math.ceil(partitions / redis.call('ZCARD', KEYS[1]))
local mine, taken = {}, {}
for p = 0, partitions - 1 do
  if redis.call('GET', KEYS[p + 2]) == me then table.insert(mine, p) end
end
if ARGV[3] == 'balance' then
  while #mine > share do redis.call('DEL', KEYS[table.remove(mine) + 2]) end
end
for _, p in ipairs(mine) do redis.call('PEXPIRE', KEYS[p + 2], lease) end
if ARGV[3] == 'balance' then
  for p = 0, partitions - 1 do
    if #mine >= share then break end
    if redis.call('SET', KEYS[p + 2], me, 'NX', 'PX', lease) then
      table.insert(mine, p)
      table.insert(taken, p)
    end
  end
end
return {mine, taken}
"""

# Read new entries of the partitions whose lease names this consumer. KEYS: per partition
# its stream and its lease key. ARGV: the group, this consumer, the lease in ms, the count.
# Returns per partition {stream, 1 and its entries [id, [field, value, ...]]} or
# {stream, 0} when the lease names another consumer or none (nothing read then).
_READ = """
local out = {}
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i + 1]) == ARGV[2] then
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[3])
    local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[i], '>')
    table.insert(out, {KEYS[i], 1, r and r[1][2] or {}})
  else
    table.insert(out, {KEYS[i], 0, {}})
  end
end
return out
"""

# XAUTOCLAIM (min-idle 0) of a partition whose lease names this consumer. KEYS: the stream,
# the lease key. ARGV: the group, this consumer, the lease in ms, the start id, the count.
# Returns XAUTOCLAIM's reply, or -1 (nothing claimed) when the lease is not this consumer's.
_CLAIM = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'COUNT', ARGV[5])
"""

# Release this consumer's leases and heartbeat (a clean exit). KEYS: the heartbeat set,
# then the lease keys. ARGV: this consumer.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1
"""


def partition_of(entity_key: str, partitions: int) -> int:
    """The partition of an entity: CRC-32 (zlib's, the IEEE polynomial of zip and PNG,
    unsigned) of the UTF-8 bytes of the entity key, modulo `partitions`. The entity key is
    the one `fraudseq.transaction.request_entity` forms from a request (for one entity
    column, its text, e.g. the card id ``"C1"``). In SQL or other languages: Java
    ``java.util.zip.CRC32``, Go ``hash/crc32.ChecksumIEEE``, Node ``zlib.crc32``."""
    if partitions < 1:
        raise FraudseqError(f"partitions must be >= 1, got {partitions}")
    return zlib.crc32(entity_key.encode("utf-8")) % partitions


def partition_stream(stream: str, partition: int, partitions: int) -> str:
    """The stream of a partition: ``NAME:p``, or ``NAME`` itself with one partition."""
    return stream if partitions == 1 else f"{stream}:{partition}"


def produce(client, stream: str, transactions, schema, *, partitions: int = 1) -> list:
    """The producer side: XADD each transaction (a dict keyed by the schema's columns, or
    its JSON text) as the ``transaction`` field of an entry of its partition's stream
    (`partition_of` its `request_entity`), in one pipeline; returns the entry ids.
    Write each account's transactions in time order: consumers score a partition in
    stream order."""
    from fraudseq.transaction import request_entity

    pipe = client.pipeline(transaction=False)
    for tx in transactions:
        text = tx if isinstance(tx, str) else json.dumps(tx)
        if partitions == 1:
            target = stream
        else:
            entity = request_entity(json.loads(tx) if isinstance(tx, str) else tx, schema)
            target = partition_stream(stream, partition_of(entity, partitions), partitions)
        pipe.xadd(target, {TRANSACTION_FIELD: text})
    return pipe.execute()


@dataclass(frozen=True)
class StreamAddress:
    """A parsed ``--stream`` URL: where to connect, the input and output streams, and the
    state store URL it implies (same server, ``prefix`` kept)."""

    redis_url: str  # the connection: the URL without stream, output and prefix
    stream: str
    output: str
    state_url: str  # the URL without stream, output and partitions
    partitions: int = 1  # the input is NAME:0 .. NAME:{P-1} (NAME itself when 1)

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
        try:
            partitions = int(options.get("partitions", "1").strip() or "1")
        except ValueError:
            partitions = 0
        if partitions < 1:
            raise FraudseqError(
                f"--stream: partitions must be a whole number >= 1, got {options['partitions']!r}"
            )
        ours = ("stream", "output", "partitions")

        def without(names: tuple[str, ...]) -> str:
            kept = [q for q in query if q[0] not in names]
            return urlunsplit(parts._replace(query=urlencode(kept, safe=":")))

        state, connection = without(ours), without((*ours, "prefix"))
        return cls(
            redis_url=connection,
            stream=stream,
            output=output,
            state_url=state,
            partitions=partitions,
        )


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
    #: With partitions: the partitions this consumer took, in order (a partition again
    #: after it was released or lost), and the batches it dropped because its lease on
    #: their partition had passed to another consumer before the acknowledgement.
    partitions_taken: list = field(default_factory=list)
    leases_lost: int = 0
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
        partitions: int = 1,
        lease_ms: int = 10_000,
    ) -> None:
        if batch < 1:
            raise FraudseqError(f"batch must be >= 1, got {batch}")
        if partitions < 1:
            raise FraudseqError(f"partitions must be >= 1, got {partitions}")
        if partitions > 1 and lease_ms < 3 * block_ms:
            raise FraudseqError(
                f"lease_ms ({lease_ms}) must be at least 3 x block_ms ({block_ms}): a lease "
                f"is renewed once a loop, and a loop waits up to block_ms for entries"
            )
        self.detector = detector
        self.client = client
        self.stream, self.output, self.group = stream, output, group
        self.consumer = consumer or default_consumer_name()
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every_s = max(claim_idle_ms / 2000, 1.0)
        self.max_idle_s = max_idle_s
        self.partitions, self.lease_ms = partitions, lease_ms
        self.streams = [partition_stream(stream, p, partitions) for p in range(partitions)]
        self.leases = [f"{stream}:lease:{group}:{p}" for p in range(partitions)]
        self.heartbeats = f"{stream}:consumers:{group}"
        self.owned: list[int] = []
        self.stats = ConsumerStats()
        self._stopping = False
        self._ack_and_write = client.register_script(_ACK_AND_WRITE)
        self._balance_script = client.register_script(_BALANCE)
        self._read_script = client.register_script(_READ)
        self._claim_script = client.register_script(_CLAIM)
        self._release_script = client.register_script(_RELEASE)
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
        (id 0): a group created after producers started still sees every entry. With
        partitions, on each partition's stream."""

        def create(stream: str) -> None:
            try:
                self.client.xgroup_create(stream, self.group, "0", mkstream=True)
            except self._redis_errors.ResponseError as err:
                if "BUSYGROUP" not in str(err):  # BUSYGROUP: it exists
                    raise

        for stream in self.streams:
            self._redis(lambda s=stream: create(s))

    def run(self) -> ConsumerStats:
        """Consume until stopped (or drained, with `max_idle_s`); returns the stats."""
        if self.partitions > 1:
            return self._run_partitions()
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

    # -- partitions --------------------------------------------------------------------------
    def _run_partitions(self) -> ConsumerStats:
        """The loop with partitions: balance (heartbeat, renew, release extras, take free
        partitions), recover each partition just taken (its pending entries, in id order),
        then read new entries of the partitions held, all under the lease checks."""
        self.ensure_group()
        log.info(
            "consumer %s of group %s: %s:0..%d -> %s, batch %d, lease %d ms",
            self.consumer, self.group, self.stream, self.partitions - 1, self.output,
            self.batch, self.lease_ms,
        )  # fmt: skip
        last_entry = time.monotonic()
        self.stats._progress.update(at=time.monotonic(), read=0)
        try:
            while not self._stopping:
                taken = self._balance("balance")
                for partition in taken:
                    if self._stopping:
                        break
                    if self._recover(partition):
                        last_entry = time.monotonic()
                if self._stopping:
                    break
                if not self.owned:
                    if self._drained_partitions(last_entry):
                        break
                    self._sleep(min(self.block_ms / 1000, 0.2))
                    continue
                if self._read_partitions():
                    last_entry = time.monotonic()
                elif self._drained_partitions(last_entry):
                    break
                self._progress()
        finally:
            self._release()
        self._progress(final=True)
        return self.stats

    def _balance(self, mode: str) -> list[int]:
        """Run the balance script (see `_BALANCE`); sets `owned`, returns the partitions
        taken now."""
        reply = self._redis(
            lambda: self._balance_script(
                keys=[self.heartbeats, *self.leases], args=[self.consumer, self.lease_ms, mode]
            )
        )
        if reply is None:  # stopped while Redis was failing
            return []
        before = set(self.owned)
        self.owned = sorted(int(p) for p in reply[0])
        taken = [int(p) for p in reply[1]]
        released = sorted(before - set(self.owned))
        if released:
            log.info("consumer %s: released partitions %s", self.consumer, released)
        if taken:
            log.info("consumer %s: took partitions %s", self.consumer, taken)
            self.stats.partitions_taken += taken
        return taken

    def _recover(self, partition: int) -> int:
        """Claim a partition's pending entries (its previous owner is dead or released it)
        and process them in id order, before any new entry of it is read. Returns how many
        were claimed."""
        total, start = 0, "0-0"
        stream, lease = self.streams[partition], self.leases[partition]
        while not self._stopping:
            reply = self._redis(
                lambda s=start: self._claim_script(
                    keys=[stream, lease],
                    args=[self.group, self.consumer, self.lease_ms, s, self.batch],
                )
            )
            if reply is None:
                break
            if not isinstance(reply, list):  # -1: the lease passed to another consumer
                self._lost(partition)
                break
            start, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # their payload is gone: nothing to score, acknowledge them
                self._redis(lambda d=deleted: self.client.xack(stream, self.group, *d))
            live = [(i, _fields(f)) for i, f in entries if f is not None]
            if live:
                log.info(
                    "consumer %s: claimed %d pending entries of partition %d",
                    self.consumer, len(live), partition,
                )  # fmt: skip
                self.stats.claimed += len(live)
                total += len(live)
                if self.process(live, partition) < 0:
                    break
                self._balance("renew")
            if start in (b"0-0", "0-0"):
                break
        return total

    def _read_partitions(self) -> int:
        """Read up to `batch` new entries of each partition held (lease-checked, in one
        script) and process each partition's; if none, wait up to `block_ms` for one.
        Returns how many entries were read."""
        keys = []
        for partition in self.owned:
            keys += [self.streams[partition], self.leases[partition]]
        reply = self._redis(
            lambda: self._read_script(
                keys=keys, args=[self.group, self.consumer, self.lease_ms, self.batch]
            )
        )
        if reply is None:
            return 0
        read = 0
        for partition, (_stream, held, entries) in zip(list(self.owned), reply, strict=True):
            if not int(held):
                self._lost(partition)
                continue
            if entries:  # processed even when stopping: the current batch is finished
                read += len(entries)
                self.process([(i, _fields(f)) for i, f in entries], partition)
        if read == 0 and self.owned and not self._stopping:
            # Nothing new: block until an entry arrives on a held partition. An entry added
            # between the script's read and this wait is read on the next loop, at most
            # block_ms later.
            streams = {self.streams[p]: "$" for p in self.owned}
            self._redis(lambda: self.client.xread(streams, count=1, block=self.block_ms))
        return read

    def _lost(self, partition: int | None) -> None:
        self.stats.leases_lost += 1
        log.warning(
            "consumer %s: partition %s passed to another consumer (lease expired); its "
            "unacknowledged entries are the new owner's",
            self.consumer, partition,
        )  # fmt: skip
        if partition in self.owned:
            self.owned.remove(partition)

    def _release(self) -> None:
        """Give up this consumer's leases and heartbeat (a clean exit): others take its
        partitions at once instead of after the lease."""
        try:
            self._release_script(keys=[self.heartbeats, *self.leases], args=[self.consumer])
        except self._redis_errors.RedisError as err:
            log.warning("consumer %s: leases not released (%s)", self.consumer, redact(str(err)))
        self.owned = []

    def _drained_partitions(self, last_entry: float) -> bool:
        """With `max_idle_s`: no entry for that long, and every partition's group has
        delivered its stream's last entry and has none pending."""
        if self.max_idle_s is None or time.monotonic() - last_entry < self.max_idle_s:
            return False

        def check() -> bool:
            pipe = self.client.pipeline(transaction=False)
            for stream in self.streams:
                pipe.xinfo_stream(stream)
                pipe.xinfo_groups(stream)
            replies = pipe.execute()
            for info, groups in zip(replies[::2], replies[1::2], strict=True):
                group = next(g for g in groups if _text(g["name"]) == self.group)
                last = _text(info["last-generated-id"])
                if group["pending"] or _text(group["last-delivered-id"]) != last:
                    return False
            return True

        return bool(self._redis(check))

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            time.sleep(min(0.05, seconds))

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

    def process(self, entries: list[tuple], partition: int | None = None) -> int:
        """Score the entries [(id, fields)], then acknowledge and write them; returns how
        many output entries were written (fewer when another consumer finished some). With
        partitions, the entries are `partition`'s: they are acknowledged only if this
        consumer still holds its lease (else nothing is, and -1 is returned)."""
        if self.stats.first_entry_at is None:
            self.stats.first_entry_at, self.stats.first_entry_cpu = time.time(), time.process_time()
        self.stats.read += len(entries)
        outputs = self._score(entries)
        if outputs is None:  # stopped while a store was failing: nothing acknowledged
            return 0
        args = [self.group, self.consumer, self.lease_ms]
        for entry_id, fields in outputs:
            args += [entry_id, len(fields) // 2, *fields]
        if partition is None:
            keys = [self.stream, self.output]
        else:
            keys = [self.streams[partition], self.output, self.leases[partition]]
        written = self._redis(
            lambda: self._ack_and_write(keys=keys, args=args),
            retry_while_stopping=True,
        )
        if written is not None and int(written) < 0:
            self._lost(partition)
            return -1
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


def _fields(raw) -> dict:
    """An entry's fields from a script's reply ([name, value, ...]) or redis-py's (a dict)."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
