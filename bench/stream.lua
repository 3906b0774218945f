-- A streaming chat completion (the mock answers in 8 chunks).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "x")
wrk.body = '{"model":"chat","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'
