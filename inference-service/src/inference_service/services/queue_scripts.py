"""Lua scripts of the admission queue: every read-modify-write runs atomically in Redis.

Keys of one queue (``{Q}`` = ``<prefix>:{<backend>|<model>}``; the braces are a Redis
Cluster hash tag, so all keys of a queue live in one slot and one script may touch them)::

    {Q}:holders   ZSET  holder id → lease expiry (ms, Redis clock)
    {Q}:wait      ZSET  waiter id → rank score (µs, lower = served first)
    {Q}:hb:<p>    ZSET  waiter id → heartbeat expiry (ms), one per priority p = 0..9

Every script starts by reading ``TIME`` (never a replica's clock), dropping expired leases
(``reclaim``) and waiters whose heartbeat expired (``purge``), so a crashed replica's slots
and queue entries disappear without any janitor process.

Rank score with aging: serving by ``priority + waited / aging`` is the same, at any
instant, as serving by the smallest ``enqueued_at - priority * aging`` (the ``now`` terms
cancel), so the score is fixed at enqueue time and the ZSET order *is* the service order.
Equal scores are made unique (+1 µs until free), so ties are served first-come first-served.

Admission rule: with ``free = capacity - live holders``, a waiter of 0-based rank ``r`` may
take a slot iff ``r < free`` — only the best-ranked waiters can, whichever replica polls.
Scripts PUBLISH the queue name on the release channel whenever a slot or a place frees up.
Numbers are written with ``%.0f``: Lua's default number format would round µs timestamps.
"""

from __future__ import annotations

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end
local function num(x) return string.format('%.0f', x) end
local function reclaim(holders, now)
  return redis.call('ZREMRANGEBYSCORE', holders, '-inf', num(now))
end
local function purge(wait, first_hb, now)
  local dropped = 0
  for i = 0, 9 do
    local hb = KEYS[first_hb + i]
    local stale = redis.call('ZRANGEBYSCORE', hb, '-inf', num(now), 'LIMIT', 0, 500)
    if #stale > 0 then
      redis.call('ZREM', wait, unpack(stale))
      redis.call('ZREM', hb, unpack(stale))
      dropped = dropped + #stale
    end
  end
  return dropped
end
"""

# KEYS: holders, wait, hb0..hb9
# ARGV: id, priority, aging_us, hb_ms, max_waiting, capacity, lease_ms, channel, queue,
#       score_override ('' = new)
# → {1, 0, score}: admitted at once; {0, position, score}: waiting; {-1, 0, ''}: queue full
ENQUEUE = (
    _PRELUDE
    + """
local holders, wait = KEYS[1], KEYS[2]
local id, p = ARGV[1], tonumber(ARGV[2])
local hb = KEYS[3 + p]
local now, now_us = now_ms()
if reclaim(holders, now) + purge(wait, 3, now) > 0 then
  redis.call('PUBLISH', ARGV[8], ARGV[9])
end
local score
if ARGV[10] ~= '' then
  score = tonumber(ARGV[10])
else
  score = now_us - p * tonumber(ARGV[3])
  while redis.call('ZCOUNT', wait, num(score), num(score)) > 0 do score = score + 1 end
end
local free = tonumber(ARGV[6]) - redis.call('ZCARD', holders)
local ahead = redis.call('ZCOUNT', wait, '-inf', '(' .. num(score))
if ahead < free then
  redis.call('ZADD', holders, num(now + tonumber(ARGV[7])), id)
  return {1, 0, num(score)}
end
if ARGV[10] == '' and redis.call('ZCARD', hb) >= tonumber(ARGV[5]) then
  return {-1, 0, ''}
end
redis.call('ZADD', wait, num(score), id)
redis.call('ZADD', hb, num(now + tonumber(ARGV[4])), id)
return {0, ahead + 1, num(score)}
"""
)

# KEYS: holders, wait, hb0..hb9
# ARGV: id, priority, hb_ms, capacity, lease_ms, channel, queue
# → {1, 0}: admitted; {0, position}: still waiting (heartbeat refreshed); {-2, 0}: not in
#   the queue any more (its heartbeat expired and it was purged: re-enqueue)
POLL = (
    _PRELUDE
    + """
local holders, wait = KEYS[1], KEYS[2]
local id, p = ARGV[1], tonumber(ARGV[2])
local hb = KEYS[3 + p]
local now = now_ms()
if reclaim(holders, now) + purge(wait, 3, now) > 0 then
  redis.call('PUBLISH', ARGV[6], ARGV[7])
end
local rank = redis.call('ZRANK', wait, id)
if not rank then return {-2, 0} end
local free = tonumber(ARGV[4]) - redis.call('ZCARD', holders)
if rank < free then
  redis.call('ZREM', wait, id)
  redis.call('ZREM', hb, id)
  redis.call('ZADD', holders, num(now + tonumber(ARGV[5])), id)
  redis.call('PUBLISH', ARGV[6], ARGV[7])  -- positions moved up; maybe more slots free
  return {1, 0}
end
redis.call('ZADD', hb, num(now + tonumber(ARGV[3])), id)
return {0, rank + 1}
"""
)

# KEYS: holders, wait, hb_p   ARGV: id, channel, queue
# Leave the queue and/or give the slot back (whichever applies; safe to repeat).
# → number of entries removed
ABANDON = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if removed > 0 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return removed
"""

# KEYS: holders   ARGV: id, lease_ms, capacity
# → 1: lease extended; 2: lease had been reclaimed, re-taken (a slot was free);
#   0: lease lost and the slots are full
RENEW = (
    _PRELUDE
    + """
local now = now_ms()
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[2])), ARGV[1])
  return 1
end
reclaim(KEYS[1], now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], num(now + tonumber(ARGV[2])), ARGV[1])
  return 2
end
return 0
"""
)

# KEYS: holders, wait, hb0..hb9  (read-only)
# → {live holders, live waiters at priority 0, …, at priority 9}
SNAPSHOT = (
    _PRELUDE
    + """
local now = now_ms()
local out = {redis.call('ZCOUNT', KEYS[1], '(' .. num(now), '+inf')}
for i = 0, 9 do
  out[#out + 1] = redis.call('ZCOUNT', KEYS[3 + i], '(' .. num(now), '+inf')
end
return out
"""
)
