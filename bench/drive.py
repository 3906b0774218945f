"""Sends N chat completions over C keep-alive connections and checks each answer is a
200 (a stream is read to its end). Usage: drive.py HOSTPORT KEY N C [stream]"""
import http.client
import json
import sys
import threading

hostport, key, n, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stream = len(sys.argv) > 5 and sys.argv[5] == "stream"
host, port = hostport.split(":")
body = json.dumps({"model": "chat", "stream": stream,
                   "messages": [{"role": "user", "content": "Say hello to the benchmark"}]})
headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
failed = []


def worker(k):
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    for _ in range(k):
        conn.request("POST", "/v1/chat/completions", body, headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            failed.append(r.status)


per = [n // c + (1 if i < n % c else 0) for i in range(c)]
threads = [threading.Thread(target=worker, args=(k,)) for k in per]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failed:
    sys.exit(f"{len(failed)} of {n} requests failed: {sorted(set(failed))}")
