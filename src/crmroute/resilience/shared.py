"""The guards' state shared by several nodes through Redis (``CRMROUTE_REDIS_URL``).

What Redis holds, under ``crmroute:`` (all keys expire on their own):

    v:<lookup>        a CRM answer (JSON) with the cache TTL, shortened by up to ``TTL_JITTER``
    lease:<lookup>    the node asking the CRM for that lookup now (single-flight across nodes; it lives
                      ``LEASE_S`` and its holder renews it while the request runs, so a dead node's lapses soon)
    bucket:<source>   the source's token bucket: ``tokens``, ``updated`` (ms, Redis clock); a 429 moves ``updated``
    busy:<source>     requests in flight to the source (sorted set: member -> expiry ms)
    quota:<source>:<window s>  a quota's count (hash: slot number -> requests, ``vendor``, ``limit``; see _QUOTA_USED)
    breaker:<source>  the source's circuit: ``state``, ``until``, ``failures``, ``probe_until``
    nodes             live nodes (sorted set: node id -> last heartbeat ms)

Every Redis command runs under ``min(OP_TIMEOUT_S, what the call has left)``;
one that runs out falls back to the local state for that step, and has the
heartbeat check Redis at once (meanwhile the calls work locally). A refused
connection or a missed heartbeat marks Redis down: the guards work from their
local state until the heartbeat (every ``HEARTBEAT_S``) reaches Redis again. Time
is Redis's own (``TIME``), so the nodes' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError

from crmroute.resilience.budget import QUOTA_SLOTS

logger = logging.getLogger(__name__)

T = TypeVar("T")

OP_TIMEOUT_S = 0.3  # the longest one Redis command may take on the call path
WARM_CONNECTIONS = 32  # opened when Redis is reached, so a burst of calls does not wait for connections
HEARTBEAT_S = 1.0  # seconds between a node's heartbeats (and its checks that Redis is back)
NODE_EXPIRY_S = 5.0  # a node without a heartbeat this long is no longer counted live
TTL_JITTER = 0.1  # a shared value lives its TTL less up to this share of it, so a herd expires spread out
POLL_S = 0.01  # seconds between looks at a lookup another node is asking the CRM for
LEASE_S = 1.0  # a lease not renewed lapses after this: the longest a node that died asking the CRM holds a lookup
LEASE_RENEW_S = LEASE_S / 4  # how often the holder renews it (only requests running longer send a renewal)
PREFIX = "crmroute:"

# Answer if cached, else the lease if free ("lease"), else "wait". KEYS: value, lease. ARGV: node, lease ms.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v then return {v, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lease', 0} end
return {'wait', 0}
"""

# The holder's renewal of its lease. KEYS: lease. ARGV: node, lease ms. 1 if renewed, 0 if it is no longer ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# A quota's count over its rolling window (as resilience/budget.py's QuotaCounter): a hash of slot number ->
# requests, plus ``vendor`` (what the vendor counted beyond them, ``sync``) and ``limit`` (the vendor's, if it said).
# Slots older than the window are dropped. Used by _RESERVE and _QUOTA_SYNC; returns used, limit, current slot.
_QUOTA_USED = """
local function quota_used(key, now, limit, window)
  local slot_ms = window / %d
  local slot = math.floor(now / slot_ms)
  local h = redis.call('HGETALL', key)
  local used, stale = 0, {}
  for i = 1, #h, 2 do
    local f, n = h[i], tonumber(h[i + 1])
    if f == 'limit' then limit = n
    elseif f == 'vendor' then used = used + n
    elseif tonumber(f) <= slot - %d then stale[#stale + 1] = f
    else used = used + n end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return math.max(0, used), limit, slot, slot_ms
end
""" % (QUOTA_SLOTS, QUOTA_SLOTS)

# A token bucket with reservations (as resilience/budget.py's TokenBucket), and the source's quotas. KEYS: bucket,
# busy set, then one hash per quota. ARGV: rate/s, burst, max wait ms, slot limit, member, slot ms, then per quota
# its limit and window ms. A spent quota refuses first: {'quota', its index (0-based), used, limit}. Else
# {ms to wait for the token taken, or -(ms paused) - 1 if refused; 1 if a request slot was taken too (only when
# there is no wait); then per quota used (this request counted) and limit}.
_RESERVE = _QUOTA_USED + """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local quotas = {}
for i = 3, #KEYS do
  local a = 7 + (i - 3) * 2
  local used, limit, slot, slot_ms = quota_used(KEYS[i], now, tonumber(ARGV[a]), tonumber(ARGV[a + 1]))
  if used >= limit then return {'quota', i - 3, used, limit} end
  quotas[#quotas + 1] = {KEYS[i], used, limit, slot, slot_ms, tonumber(ARGV[a + 1])}
end
local rate, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(b[1]) or burst, tonumber(b[2]) or now
if now > updated then tokens = math.min(burst, tokens + (now - updated) * rate / 1000); updated = now end
local wait = math.max(0, updated - now) + math.max(0, (1 - tokens) * 1000 / rate)
if wait > max_wait then return {tostring(-math.max(0, updated - now) - 1), 0} end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'updated', tostring(updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(wait + 1000 * burst / rate) + 60000)
local out = {tostring(wait), 0}
for _, q in ipairs(quotas) do  -- the token is taken: the request is counted
  redis.call('HINCRBY', q[1], q[4], 1)
  redis.call('PEXPIRE', q[1], math.ceil(q[6] + q[5]))
  out[#out + 1] = q[2] + 1
  out[#out + 1] = q[3]
end
if wait > 0 or #KEYS < 2 then return out end
-- no wait: take a request slot in the same round trip, if one is free (as _ENTER)
local nowms = math.floor(now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', nowms)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return out end
redis.call('ZADD', KEYS[2], nowms + tonumber(ARGV[6]), ARGV[5])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]) + 1000)
out[2] = 1
return out
"""

# The vendor's own count of a quota (and its limit, if > 0): the hash keeps what it counted beyond our requests.
# KEYS: quota hash. ARGV: used, limit, window ms.
_QUOTA_SYNC = _QUOTA_USED + """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
redis.call('HDEL', KEYS[1], 'vendor')
local used, _, _, slot_ms = quota_used(KEYS[1], now, 0, tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'vendor', tonumber(ARGV[1]) - used)
if tonumber(ARGV[2]) > 0 then redis.call('HSET', KEYS[1], 'limit', tonumber(ARGV[2])) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) + slot_ms))
return 1
"""

# A 429: no token before ARGV[1] ms from now. KEYS: bucket. ARGV: ms, rate, burst.
_PAUSE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens, updated = tonumber(b[1]) or burst, tonumber(b[2]) or now
if now > updated then tokens = math.min(burst, tokens + (now - updated) * rate / 1000); updated = now end
local untilms = now + tonumber(ARGV[1])
if untilms > updated then updated = untilms; tokens = math.min(tokens, 0) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(updated - now) + 60000)
return 1
"""

# A request slot if fewer than ARGV[1] are in flight. KEYS: busy set. ARGV: limit, member, slot ms.
_ENTER = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 1000)
return 1
"""

# The breaker's admission: {"normal", failures counted} or {"probe"|"refuse", ms until a probe may go}.
# KEYS: breaker. ARGV: probe ms.
_ADMIT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local b = redis.call('HMGET', KEYS[1], 'state', 'until', 'probe_until', 'failures')
if b[1] ~= 'open' then return {'normal', tonumber(b[4]) or 0} end
local untilms = tonumber(b[2]) or 0
if now < untilms then return {'refuse', untilms - now} end
if now < (tonumber(b[3]) or 0) then return {'refuse', 0} end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
return {'probe', 0}
"""

# A request's outcome. KEYS: breaker. ARGV: success|failure|release, probe (0/1), threshold, cooldown ms.
# Returns the ms the circuit stays open after it, -1 when closed.
_OUTCOME = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local outcome, probe, threshold, cooldown = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local function open()
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', now + cooldown, 'failures', 0, 'probe_until', 0)
  state = 'open'
end
if outcome == 'success' then
  if probe or state == 'closed' then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'probe_until', 0); state = 'closed'
  end
elseif outcome == 'failure' then
  if probe then open()
  elseif state == 'closed' then
    if redis.call('HINCRBY', KEYS[1], 'failures', 1) >= threshold then open() end
  end
elseif probe then
  redis.call('HSET', KEYS[1], 'probe_until', 0)
end
redis.call('PEXPIRE', KEYS[1], cooldown + 3600000)
if state == 'open' then return math.max(0, (tonumber(redis.call('HGET', KEYS[1], 'until')) or now) - now) end
return -1
"""

# A heartbeat: this node is live; how many are. KEYS: nodes. ARGV: node id, expiry ms.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
"""


@dataclass
class Reservation:
    """What ``SharedState.reserve`` got: ``wait`` (seconds to wait for the token taken; ``None``: no token, the
    source ``paused`` for so many seconds or a quota spent), whether a request slot was taken too, the quotas'
    (used, limit) with this request counted, and ``spent``: (the spent quota's index, used, limit)."""

    wait: float | None
    paused: float
    entered: bool
    quotas: list[tuple[int, int]]
    spent: tuple[int, int, int] | None = None


class SharedUnavailable(Exception):
    """Redis did not answer in time (or at all): the caller uses its local state."""


def digest(lookup: Hashable) -> str:
    """A lookup's identity as a short key part (the same on every node: ``repr`` of strings and numbers)."""
    return hashlib.blake2b(repr(lookup).encode(), digest_size=16).hexdigest()


class SharedState:
    """One node's connection to the shared state, its health, and its heartbeat."""

    def __init__(
        self, url: str, node_id: str, *, prefix: str = PREFIX, op_timeout: float = OP_TIMEOUT_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:  # fmt: skip
        self.node_id = node_id
        self.prefix = prefix
        self.op_timeout = op_timeout
        self.heartbeat_s = heartbeat_s
        self.client = aioredis.Redis.from_url(
            # The sockets' own time-outs are for the heartbeat and background writes (four op time-outs); a call's
            # commands are cut at the op time-out by `run`.
            url, socket_timeout=op_timeout * 4, socket_connect_timeout=op_timeout * 4, retry_on_timeout=False,
            health_check_interval=0, max_connections=200, decode_responses=True,
            driver_info=DriverInfo(name=None, lib_version=None),  # no CLIENT SETINFO: one round trip less a connection
        )  # fmt: skip
        self._claim = self.client.register_script(_CLAIM)
        self._renew = self.client.register_script(_RENEW)
        self._reserve = self.client.register_script(_RESERVE)
        self._pause = self.client.register_script(_PAUSE)
        self._enter = self.client.register_script(_ENTER)
        self._admit = self.client.register_script(_ADMIT)
        self._outcome = self.client.register_script(_OUTCOME)
        self._heartbeat = self.client.register_script(_HEARTBEAT)
        self._quota_sync = self.client.register_script(_QUOTA_SYNC)
        self.up = False  # until the first heartbeat reaches Redis
        self.live_nodes = 1  # as last counted (kept while Redis is down: the local budgets' divisor)
        self.outages = 0  # times Redis was found down
        self._check: asyncio.Task | None = None  # a heartbeat sent at once after a command ran out of time
        self._scripts = (self._claim, self._renew, self._reserve, self._pause, self._enter, self._admit, self._outcome,
                         self._quota_sync)
        self._task: asyncio.Task | None = None
        self._closed = False
        self._background: set[asyncio.Task] = set()
        self._held: dict[str, asyncio.Task] = {}  # lookup digest -> the renewal of this node's lease on it

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- health ----------------------------------------------------------------

    async def start(self) -> None:
        await self.beat()
        if not self.up:
            logger.warning("Redis unreachable at start: node %s works alone until it answers", self.node_id)
        self._task = asyncio.create_task(self._beat_forever(), name="shared-state-heartbeat")

    async def close(self) -> None:
        self._closed = True  # ends the heartbeat even if a cancel is lost (see `beat`)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in [*self._background, *self._held.values(), *([self._check] if self._check else [])]:
            task.cancel()
        if self.up:  # leave the live set at once: the others' budgets grow back without waiting for the expiry
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.op_timeout):
                    await self.client.zrem(self.key("nodes"), self.node_id)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(self.op_timeout * 4):
                await self.client.aclose()

    async def beat(self) -> None:
        """One heartbeat: marks Redis up (it answered) or down."""
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result instead of raising when it is
        # cancelled as its command answers (CPython gh-86296), and the heartbeat loop would outlive `close`.
        patience = self.op_timeout * 4  # off the call path: a busy Redis is given longer than a call would give it
        try:
            async with asyncio.timeout(patience):
                count = await self._heartbeat(keys=[self.key("nodes")], args=[self.node_id, int(NODE_EXPIRY_S * 1000)])
        except (RedisError, OSError, TimeoutError) as exc:
            self.down(exc)
            return
        self.live_nodes = max(1, int(count))
        if not self.up:
            try:  # a restarted Redis has forgotten the scripts; loaded now, and connections opened, for the calls
                for script in self._scripts:
                    async with asyncio.timeout(patience):
                        await self.client.script_load(script.script)
                async with asyncio.timeout(patience):
                    await asyncio.gather(*(self.client.ping() for _ in range(WARM_CONNECTIONS)))
            except (RedisError, OSError, TimeoutError) as exc:
                self.down(exc)
                return
            logger.info("shared state in Redis reached (node %s, %d live nodes)", self.node_id, self.live_nodes)
            self.up = True

    async def _beat_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.heartbeat_s)
            await self.beat()

    def down(self, exc: BaseException) -> None:
        if self.up:
            self.outages += 1
            logger.warning("Redis unreachable (%s): node %s works from its local cache, budgets (1/%d of each) "
                           "and breakers until it is back", type(exc).__name__ or "timeout", self.node_id,
                           self.live_nodes)  # fmt: skip
        self.up = False

    async def run(self, make: Callable[[], Awaitable[T]], deadline_at: float, patience: float | None = None) -> T:
        """``make()``'s result within ``patience`` (the op time-out unless given) and the deadline;
        ``SharedUnavailable`` else."""
        if not self.up or self._check is not None:
            raise SharedUnavailable
        left = min(patience or self.op_timeout, deadline_at - time.monotonic())
        if left <= 0:
            raise SharedUnavailable  # the call has no time left for Redis; not Redis's fault
        try:
            async with asyncio.timeout(left):  # (no task per command, unlike wait_for)
                result = await make()
        except TimeoutError:
            if left >= self.op_timeout and self._check is None:  # Redis had its full time: is it hung?
                self._check = asyncio.get_running_loop().create_task(self._check_now())
            raise SharedUnavailable from None
        except (RedisError, OSError) as exc:
            self.down(exc)
            raise SharedUnavailable from None
        return result

    async def _check_now(self) -> None:
        try:
            await self.beat()
        finally:
            self._check = None

    def later(self, make: Callable[[], Awaitable[Any]]) -> None:
        """Run ``make()`` in the background, errors only marking Redis down. Off the call path, a busy Redis is
        given four op time-outs (a pause or a breaker's count lost to one slow moment would not be shared)."""

        async def go() -> None:
            patience = self.op_timeout * 4
            with contextlib.suppress(SharedUnavailable):
                await self.run(make, time.monotonic() + patience, patience)

        task = asyncio.get_running_loop().create_task(go())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settled(self) -> None:
        """Wait for the background writes started so far."""
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- values and leases -----------------------------------------------------

    async def claim(self, lookup_digest: str, hold_s: float, deadline_at: float) -> tuple[str, dict | None, int]:
        """``("value", answer, ms left)``, ``("lease", None, 0)`` (ask the CRM) or ``("wait", None, 0)``.

        A lease won lives ``LEASE_S`` and is renewed until ``store`` frees it, for ``hold_s`` at most (the
        request's own bound): a node that dies asking lets its waiters ask in its stead within ``LEASE_S``.
        """
        keys = [self.key("v", lookup_digest), self.key("lease", lookup_digest)]
        lease_ms = max(1, int(min(LEASE_S, hold_s) * 1000))
        head, ttl = await self.run(lambda: self._claim(keys=keys, args=[self.node_id, lease_ms]), deadline_at)
        if head == "lease":
            self._hold(lookup_digest, time.monotonic() + hold_s)
        if head in ("lease", "wait"):
            return head, None, 0
        return "value", json.loads(head), int(ttl)

    def _hold(self, lookup_digest: str, until: float) -> None:
        """Renew this node's lease on a lookup every ``LEASE_RENEW_S`` until ``until`` or ``store``."""
        key = self.key("lease", lookup_digest)

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_RENEW_S)
                left = until - time.monotonic()
                if left <= 0:
                    return
                lease_ms = max(1, int(min(LEASE_S, left) * 1000))
                try:
                    if not await self.run(lambda: self._renew(keys=[key], args=[self.node_id, lease_ms]), until):
                        return  # it lapsed and another node took it (that node asks the CRM too)
                except SharedUnavailable:
                    pass  # it lapses unless a later renewal reaches Redis in time

        def forget(done: asyncio.Task) -> None:
            if self._held.get(lookup_digest) is done:
                del self._held[lookup_digest]

        previous = self._held.pop(lookup_digest, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(renew())
        self._held[lookup_digest] = task
        task.add_done_callback(forget)

    def store(self, lookup_digest: str, answer: dict | None, ttl_ms: int) -> None:
        """Keep ``answer`` for ``ttl_ms`` (none: nothing kept) and free the lease, in one round trip (in the
        background)."""
        held = self._held.pop(lookup_digest, None)
        if held is not None:
            held.cancel()

        async def go() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                if answer is not None and ttl_ms > 0:
                    pipe.set(self.key("v", lookup_digest), json.dumps(answer, separators=(",", ":")), px=ttl_ms)
                pipe.delete(self.key("lease", lookup_digest))
                await pipe.execute()

        self.later(go)

    # --- budgets -----------------------------------------------------------------

    async def reserve(
        self, source: str, rate: float, burst: float, max_wait_s: float, deadline_at: float,
        limit: int, member: str, slot_ms: int, quotas: Sequence[tuple[int, float]] = (),
    ) -> Reservation:  # fmt: skip
        """A token (and a request slot for ``member`` if one is free at once), the request counted in the source's
        ``quotas`` ((limit, window s) each), in one round trip; see ``Reservation``."""
        keys = [self.key("bucket", source), self.key("busy", source)]
        keys += [self.key("quota", source, f"{window:g}") for _, window in quotas]
        args = [rate, burst, max(0.0, max_wait_s) * 1000, limit, member, max(1, slot_ms)]
        args += [x for limit_, window in quotas for x in (limit_, window * 1000)]
        head, entered, *counts = await self.run(lambda: self._reserve(keys=keys, args=args), deadline_at)
        if head == "quota":
            return Reservation(None, 0.0, False, [], spent=(int(entered), int(counts[0]), int(counts[1])))
        ms = float(head)
        if ms < 0:
            return Reservation(None, (-ms - 1) / 1000, False, [])
        return Reservation(ms / 1000, 0.0, bool(entered), [(int(u), int(n)) for u, n in zip(counts[::2], counts[1::2])])

    def sync_quota(self, source: str, window_s: float, used: int, limit: int | None) -> None:
        """The vendor's own count of a quota (and its limit), for every node (in the background)."""
        args = [used, limit or 0, window_s * 1000]
        self.later(lambda: self._quota_sync(keys=[self.key("quota", source, f"{window_s:g}")], args=args))

    def pause(self, source: str, seconds: float, rate: float, burst: float) -> None:
        self.later(lambda: self._pause(keys=[self.key("bucket", source)], args=[int(seconds * 1000), rate, burst]))

    async def enter(self, source: str, limit: int, member: str, slot_ms: int, deadline_at: float) -> bool:
        return bool(await self.run(lambda: self._enter(keys=[self.key("busy", source)],
                                                       args=[limit, member, max(1, slot_ms)]), deadline_at))

    def leave(self, source: str, member: str) -> None:
        self.later(lambda: self.client.zrem(self.key("busy", source), member))

    # --- breakers ----------------------------------------------------------------

    async def admit(self, source: str, probe_ms: int, deadline_at: float) -> tuple[str, float]:
        """``("normal", failures counted)`` or ``("probe"|"refuse", seconds until a probe may go)``."""
        verdict, ms = await self.run(lambda: self._admit(keys=[self.key("breaker", source)], args=[max(1, probe_ms)]),
                                     deadline_at)  # fmt: skip
        return verdict, int(ms) if verdict == "normal" else int(ms) / 1000

    def outcome(self, source: str, outcome: str, probe: bool, threshold: int, cooldown_s: float,
                on_state: Callable[[float | None], None]) -> None:  # fmt: skip
        """Count a request's outcome (in the background); ``on_state`` gets the seconds the circuit stays open
        after it (``None``: closed)."""

        async def go() -> None:
            ms = int(await self._outcome(keys=[self.key("breaker", source)],
                                         args=[outcome, int(probe), threshold, int(cooldown_s * 1000)]))
            on_state(ms / 1000 if ms >= 0 else None)

        self.later(go)


def new_member() -> str:
    return uuid.uuid4().hex
