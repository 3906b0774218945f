"""Holds many streaming requests open at once and reports the server's memory meanwhile.

Usage: streams.py HOSTPORT KEY MODEL N PIDS [MAX_SECONDS]
  PIDS: comma-separated process ids whose VmRSS is summed (the server and its children).
Opens N connections (a few hundred at a time), sends a streaming chat completion on
each and waits for its first SSE event; the upstream (a slow mock) keeps every stream
open. Once all are open (or MAX_SECONDS, default 90, have passed) it waits a second,
reads the servers' VmRSS, and closes everything. Prints one JSON object:
  {"requested": N, "opened": k, "failed": f, "rss_kb": kb, "open_seconds": s}
"""
import asyncio
import json
import resource
import sys
import time


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


async def main():
    hostport, key, model, n, pids = sys.argv[1:6]
    n = int(n)
    pids = [p for p in pids.split(",") if p]
    max_s = float(sys.argv[6]) if len(sys.argv) > 6 else 90.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = hostport.split(":")
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "hold this stream open"}]}).encode()
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {hostport}\r\n"
           f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    gate = asyncio.Semaphore(200)
    release = asyncio.Event()
    writers, opened, failed = [], 0, 0
    t0 = time.monotonic()
    deadline = t0 + max_s

    async def one():
        nonlocal opened, failed
        try:
            async with gate:
                reader, writer = await asyncio.open_connection(host, int(port))
                writers.append(writer)
                writer.write(req)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    raise RuntimeError(head[:100])
                await reader.readuntil(b"data:")
            opened += 1
            await release.wait()
        except Exception:
            failed += 1

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    while opened + failed < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    open_s = time.monotonic() - t0
    await asyncio.sleep(1.0)
    rss = rss_kb(pids)
    result = {"requested": n, "opened": opened, "failed": failed, "rss_kb": rss,
              "open_seconds": round(open_s, 1)}
    release.set()
    for w in writers:
        w.transport.abort()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
