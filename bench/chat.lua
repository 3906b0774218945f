-- A small non-streaming chat completion, authenticated for both the gateway and the mock.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "x")
wrk.body = '{"model":"chat","messages":[{"role":"user","content":"Say hello to the benchmark"}]}'
