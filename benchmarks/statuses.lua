-- R1: count answers by status (wrk -s benchmarks/statuses.lua); wrk itself only tells
-- 2xx/3xx from the rest, and R1 must tell 429 (limited) from anything unexpected.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok, limited, other = 0, 0, 0
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 429 then
    limited = limited + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local o, l, x = 0, 0, 0
  for _, thread in ipairs(threads) do
    o = o + thread:get("ok")
    l = l + thread:get("limited")
    x = x + thread:get("other")
  end
  io.write(string.format("statuses: 200=%d 429=%d other=%d\n", o, l, x))
end
