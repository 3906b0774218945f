"""Streaming latency, direct vs through a gateway, interleaved request by request.

Usage: ttft.py MOCK_HOSTPORT GATEWAY_HOSTPORT KEY N [MAX_SECONDS]
Prints one JSON object:
  {"n": pairs, "direct": {"ttft": {"p50":..,"p90":..,"p99":..}, "ttlt": {...}},
   "gateway": {...}}   (microseconds)
Each request goes over a kept-alive connection (TCP_NODELAY); the clock runs from sending
the request to reading the first byte of the body (time to first token: the first SSE
event) and to reading the end of the body (time to last token). Direct and gateway
requests alternate, so machine drift hits both alike. Stops after N pairs or
MAX_SECONDS (default 30), whichever comes first.
"""
import http.client
import json
import socket
import sys
import time

BODY = b'{"model":"chat","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'


def conn(hostport):
    host, port = hostport.split(":")
    c = http.client.HTTPConnection(host, int(port))
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def one(c, key):
    t0 = time.perf_counter_ns()
    c.request("POST", "/v1/chat/completions", BODY,
              {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    r = c.getresponse()
    first = r.read1(1)
    t1 = time.perf_counter_ns()
    rest = r.read()
    t2 = time.perf_counter_ns()
    if r.status != 200 or not first or b"[DONE]" not in rest:
        raise SystemExit(f"ttft.py: bad stream: status {r.status}, body {(first + rest)[:200]!r}")
    return (t1 - t0) / 1000, (t2 - t0) / 1000


def pcts(xs):
    xs = sorted(xs)
    at = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return {"p50": round(at(0.50)), "p90": round(at(0.90)), "p99": round(at(0.99))}


def main():
    mock, gw, key, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    max_s = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    cd, cg = conn(mock), conn(gw)
    for _ in range(50):
        one(cd, key), one(cg, key)
    d, g = [], []
    deadline = time.monotonic() + max_s
    while len(d) < n and time.monotonic() < deadline:
        d.append(one(cd, key))
        g.append(one(cg, key))
    out = {"n": len(d)}
    for name, xs in (("direct", d), ("gateway", g)):
        out[name] = {"ttft": pcts([x[0] for x in xs]), "ttlt": pcts([x[1] for x in xs])}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
