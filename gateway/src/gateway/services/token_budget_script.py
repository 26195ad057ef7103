"""The Redis side of token budgets: two atomic Lua scripts, Redis's own clock.

A sliding window of *charges* per principal, with the request limiter's exactness (one
window for every gateway replica, ``TIME`` from Redis, an expired key is an empty window —
it never refills faster than the rate)::

    {p}{K}:z   zset   charge id → time it entered the window (ms)
    {p}{K}:h   hash   charge id → tokens it counts for
    {p}{K}:t   string sum of the hash (the window's used tokens, kept so a check is O(1))
    {p}{K}:s   zset   charge ids already settled → when (idempotency, kept MAX(window, 240 s))

A charge id is a reservation's random part; a WebSocket's later generations are
``<id>#<seq>``. Both scripts first drop charges older than the window (each charge is
dropped once, so the trim is O(log n) amortised per call).

RESERVE  KEYS z, h, t   ARGV limit, window ms, need, charge, id
  Admitted when the window is empty or ``used + need <= limit``; then ``charge`` tokens are
  added under ``id`` (``charge`` 0 adds nothing: the WebSocket handshake only checks).
  returns {admitted 0|1, remaining, reset ms}: remaining after this charge; reset = when the
  oldest charge leaves (admitted) or when enough will have left for ``need`` to fit (the
  Retry-After; a lower bound past 256 charges — the client then gets a later one).

SETTLE   KEYS z, h, t, s   ARGV id, tokens, window ms, keep ms
  Sets charge ``id`` to ``tokens`` and moves it to now (the tokens were delivered by now);
  a charge no longer in the window (a generation longer than it) is charged afresh. A second
  settlement of the same id changes nothing.
  returns {settled 0|1, tokens it replaced or -1 when it was not in the window}
"""

_NOW_AND_TRIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function trim(z, h, total, window)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - window)
  if #old == 0 then return end
  local freed = 0
  for _, id in ipairs(old) do
    freed = freed + (tonumber(redis.call('HGET', h, id)) or 0)
    redis.call('HDEL', h, id)
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
  if redis.call('ZCARD', z) == 0 then
    redis.call('DEL', total)
  else
    redis.call('DECRBY', total, freed)
  end
end
"""

RESERVE = (
    _NOW_AND_TRIM
    + """
local z, h, total = KEYS[1], KEYS[2], KEYS[3]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local charge = tonumber(ARGV[4])
local id = ARGV[5]
trim(z, h, total, window)
local used = math.max(0, tonumber(redis.call('GET', total)) or 0)
if used == 0 or used + need <= limit then
  if charge > 0 then
    redis.call('ZADD', z, now, id)
    redis.call('HSET', h, id, charge)
    redis.call('INCRBY', total, charge)
    redis.call('PEXPIRE', z, window)
    redis.call('PEXPIRE', h, window)
    redis.call('PEXPIRE', total, window)
  end
  local oldest = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  local reset = window
  if oldest[2] then reset = tonumber(oldest[2]) + window - now end
  return {1, limit - used - charge, reset}
end
local entries = redis.call('ZRANGE', z, 0, 255, 'WITHSCORES')
local left = used
local retry = window
for i = 1, #entries, 2 do
  left = left - (tonumber(redis.call('HGET', h, entries[i])) or 0)
  retry = tonumber(entries[i + 1]) + window - now
  if left <= 0 or left + need <= limit then break end
end
return {0, limit - used, retry}
"""
)

SETTLE = (
    _NOW_AND_TRIM
    + """
local z, h, total, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
local tokens = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', settled, '-inf', now - keep)
if redis.call('ZSCORE', settled, id) then return {0, -1} end
redis.call('ZADD', settled, now, id)
redis.call('PEXPIRE', settled, keep)
trim(z, h, total, window)
local before = tonumber(redis.call('HGET', h, id))
redis.call('INCRBY', total, tokens - (before or 0))
redis.call('HSET', h, id, tokens)
redis.call('ZADD', z, now, id)
redis.call('PEXPIRE', z, window)
redis.call('PEXPIRE', h, window)
redis.call('PEXPIRE', total, window)
return {1, before or -1}
"""
)
