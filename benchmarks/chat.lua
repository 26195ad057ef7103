-- C1: POST the same JSON body every time (wrk -s benchmarks/chat.lua). The bench puts a
-- deterministic chat in BENCH_CHAT_BODY, so after the first answer each one is a cache hit.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_CHAT_BODY")
