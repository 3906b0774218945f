"""Time to first token, direct vs through the gateway, interleaved request by request.

Usage: ttft.py MOCK_HOSTPORT GATEWAY_HOSTPORT KEY N
Prints: direct_p50_us gateway_p50_us added_p50_us
Each request goes over a kept-alive connection; the clock runs from sending the request
to reading the first byte of the body (the first SSE event).
"""
import http.client
import statistics
import sys
import time

BODY = b'{"model":"chat","stream":true,"messages":[{"role":"user","content":"Say hello to the benchmark"}]}'


def conn(hostport):
    host, port = hostport.split(":")
    c = http.client.HTTPConnection(host, int(port))
    c.connect()
    import socket
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def one(c, key):
    t0 = time.perf_counter_ns()
    c.request("POST", "/v1/chat/completions", BODY,
              {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    r = c.getresponse()
    r.read1(1)
    t1 = time.perf_counter_ns()
    r.read()
    return (t1 - t0) / 1000


def main():
    mock, gw, key, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cd, cg = conn(mock), conn(gw)
    for _ in range(50):
        one(cd, key), one(cg, key)
    d, g = [], []
    for _ in range(n):
        d.append(one(cd, key))
        g.append(one(cg, key))
    dm, gm = statistics.median(d), statistics.median(g)
    print(f"{dm:.0f} {gm:.0f} {gm - dm:.0f}")


if __name__ == "__main__":
    main()
