"""The Redis side of the rate limiter: one atomic Lua script, Redis's own clock.

Sliding-window log: a sorted set per (principal, route group) holds one member per admitted
request, scored by its admission time in milliseconds. A request (or a lease of ``n``
requests) is admitted when fewer than ``limit`` members fall inside the last ``window``;
so "60/minute" means at most 60 in any 60 seconds, exactly, however the requests are
spread over gateway replicas and however long the key sat idle (an expired key is simply
an empty window — it never refills faster than the rate).

Time comes from ``TIME`` inside the script, so replicas' clocks do not matter.

KEYS[1] window zset, KEYS[2] member counter
ARGV[1] limit, ARGV[2] window ms, ARGV[3] n (slots asked)
returns {granted, remaining_after, reset_ms}
  granted: how many of the n slots were admitted (all or nothing)
  remaining_after: free slots left in the window after this call
  reset_ms: ms until the oldest member leaves the window (when granted = 0: until enough
            members leave for n slots to fit — the Retry-After)
"""

ACQUIRE = """
local key, seq_key = KEYS[1], KEYS[2]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local used = redis.call('ZCARD', key)
if used + n <= limit then
  local seq = redis.call('INCRBY', seq_key, n)
  for i = 1, n do
    redis.call('ZADD', key, now, tostring(seq - n + i))
  end
  redis.call('PEXPIRE', key, window)
  redis.call('PEXPIRE', seq_key, window)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {n, limit - used - n, tonumber(oldest[2]) + window - now}
end
local need = used + n - limit
local blocking = redis.call('ZRANGE', key, need - 1, need - 1, 'WITHSCORES')
local retry = window
if blocking[2] then
  retry = tonumber(blocking[2]) + window - now
end
return {0, limit - used, retry}
"""
