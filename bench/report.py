"""Turns bench/run's raw measurements into bench/out/results.{md,json} (or durability.*).

Usage: report.py full|durability RAW_DIR OUT_DIR
RAW_DIR holds metrics.tsv (target, key, value) and one folder per target with the load
generators' outputs: wrk text (*.out), oha JSON (rate-*.out), ttft.json, streams.json.
Standard library only.
"""
import json
import os
import re
import statistics
import sys

UNITS = {"us": 1, "ms": 1000, "s": 1_000_000}


def wrk(path):
    """p50/p90/p99 (µs), requests/s, requests and errors from `wrk --latency` output."""
    if not os.path.exists(path):
        return None
    text = open(path).read()
    out = {}
    for p in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            out["p" + p] = float(m.group(1)) * UNITS[m.group(2)]
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(r"^\s+(\d+) requests in", text, re.M)
    out["requests"] = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors += sum(int(x) for x in m.groups()) if m else 0
    out["errors"] = errors
    return out


def oha(path):
    """Open-loop run: latency percentiles (µs, corrected for coordinated omission)."""
    if not os.path.exists(path):
        return None
    try:
        d = json.load(open(path))
    except ValueError:
        return None
    s, lp = d.get("summary", {}), d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    total = sum(codes.values()) + sum(d.get("errorDistribution", {}).values())
    us = lambda v: None if v is None else v * 1_000_000
    return {"p50": us(lp.get("p50")), "p90": us(lp.get("p90")), "p99": us(lp.get("p99")),
            "rps": s.get("requestsPerSec"), "ok": ok, "requests": total,
            "errors": total - ok, "success_rate": s.get("successRate")}


def load_json(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def metrics(raw):
    m = {}
    path = os.path.join(raw, "metrics.tsv")
    if os.path.exists(path):
        for line in open(path):
            t, k, v = line.rstrip("\n").split("\t", 2)
            m.setdefault(t, {})[k] = v
    return m


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def c1(raw, t, rounds):
    """Medians over the interleaved rounds of each percentile, direct and gateway."""
    g = [wrk(f"{raw}/{t}/c1-{r}.out") for r in range(1, rounds + 1)]
    d = [wrk(f"{raw}/{t}/c1-direct-{r}.out") for r in range(1, rounds + 1)]
    g, d = [x for x in g if x], [x for x in d if x]
    if not g or not d:
        return None
    out = {"direct": {}, "gateway": {}, "added": {}, "direct_runs": d}
    for p in ("p50", "p90", "p99"):
        out["direct"][p] = statistics.median(x[p] for x in d)
        out["gateway"][p] = statistics.median(x[p] for x in g)
        out["added"][p] = out["gateway"][p] - out["direct"][p]
    return out


def per1000(cpu_s, requests):
    return None if cpu_s is None or not requests else cpu_s / requests * 1000


def target(raw, m, t, rounds, rates):
    mt = m.get(t, {})
    r = {"rss_kb": {}, "cpu_s_per_1000": {}, "rps": {}, "errors": 0}
    lat = c1(raw, t, rounds)
    if lat:
        r["latency_c1_us"] = {k: lat[k] for k in ("direct", "gateway", "added")}
        r["_direct_runs"] = lat["direct_runs"]
        r["errors"] += sum(wrk(f"{raw}/{t}/c1-{i}.out")["errors"] for i in range(1, rounds + 1)
                           if os.path.exists(f"{raw}/{t}/c1-{i}.out"))
    tt = load_json(f"{raw}/{t}/ttft.json")
    if tt:
        r["stream_c1_us"] = tt
        r["stream_c1_us"]["added"] = {
            k: {p: tt["gateway"][k][p] - tt["direct"][k][p] for p in ("p50", "p90", "p99")}
            for k in ("ttft", "ttlt")}
    fl = wrk(f"{raw}/{t}/floor.out")
    if fl:
        r["floor_p50_us"] = fl.get("p50")
    for name in ("c64", "c64-stream", "c256"):
        w = wrk(f"{raw}/{t}/{name}.out")
        if not w:
            continue
        r["rps"][name] = w["rps"]
        r["errors"] += w["errors"]
        r["cpu_s_per_1000"][name] = per1000(num(mt.get(f"cpu_s.{name}")), w["requests"])
        r.setdefault("latency_closed_us", {})[name] = {p: w.get(p) for p in ("p50", "p90", "p99")}
    for rate in rates:
        o = oha(f"{raw}/{t}/rate-{rate}.out")
        if o:
            o["cpu_s_per_1000"] = per1000(num(mt.get(f"cpu_s.rate-{rate}")), o["ok"])
            r.setdefault("fixed_rate", {})[str(rate)] = o
    for k in ("idle_rss_kb", "c256_rss_kb", "peak_rss_kb"):
        if k in mt:
            r["rss_kb"][k.replace("_rss_kb", "")] = int(mt[k])
    st = load_json(f"{raw}/{t}/streams.json")
    if st:
        r["open_streams"] = st
    return r


# ---- formatting --------------------------------------------------------------------------

def f(x, digits=0):
    if x is None:
        return "–"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def added(abs_, add):
    if abs_ is None:
        return "–"
    return f"{f(abs_)} (+{f(add)})" if add is not None and add >= 0 else f"{f(abs_)} ({f(add)})"


def mb(kb):
    return "–" if kb is None else f"{kb / 1024:.1f}"


def ratio(a, b, invert=False):
    if not a or not b:
        return ""
    x = b / a if invert else a / b
    return f"×{x:,.0f}" if x >= 10 else f"×{x:,.1f}"


def sfx(s, suffix):
    return s + suffix if s else ""


def full(raw, out):
    m = metrics(raw)
    meta = m.get("meta", {})
    rounds = int(meta.get("rounds", 3))
    rates = [int(x) for x in meta.get("rates", "").split()]
    names = [t for t in ("direct", "relay", "asc", "litellm") if t in m or os.path.isdir(f"{raw}/{t}")]
    res = {t: target(raw, m, t, rounds, rates) for t in names}
    # The direct column's c=1 latency: the median over every gateway phase's direct runs.
    # The direct column's c=1 latency: each gateway phase's direct runs (a range when
    # the phases differ); "added" always subtracts the direct runs of the same phase.
    phases = [res[t]["latency_c1_us"]["direct"] for t in names if "latency_c1_us" in res[t]]
    for t in names:
        res[t].pop("_direct_runs", None)
    if phases and "direct" in res:
        res["direct"]["latency_c1_us"] = {"direct": {p: [ph[p] for ph in phases] for p in ("p50", "p90", "p99")}}
    gws = [t for t in ("asc", "litellm") if t in res]
    for t in gws:
        s = res[t].get("stream_c1_us")
        if s:
            res.setdefault("_direct_stream", []).append(s["direct"])
    dstream = res.pop("_direct_stream", [])
    label = {"direct": "direct (mock)", "relay": "TCP relay (socat)", "asc": "ASC",
             "litellm": f"LiteLLM {meta.get('litellm', '')}".strip()}
    relay = ["relay"] if "relay" in res else []
    cols = ["direct"] + relay + gws
    has_ll = "litellm" in res and "asc" in res
    head = "| measure | " + " | ".join(label[c] for c in cols) + (" | ASC vs LiteLLM |" if has_ll else " |")
    rows = [head, "|" + " --- |" * (len(cols) + 1 + has_ll)]

    def row(name, cells, cmp=""):
        rows.append(f"| {name} | " + " | ".join(cells) + (f" | {cmp} |" if has_ll else " |"))

    def g(t, *path):
        x = res.get(t)
        for p in path:
            if not isinstance(x, dict):
                return None
            x = x.get(p)
        return x

    def span(xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            return "–"
        lo, hi = min(xs), max(xs)
        return f(lo) if round(lo) == round(hi) else f"{f(lo)}–{f(hi)}"

    for p in ("p50", "p90", "p99"):
        cells = [span(g("direct", "latency_c1_us", "direct", p) or [])]
        cells += [added(g(t, "latency_c1_us", "gateway", p), g(t, "latency_c1_us", "added", p)) for t in relay + gws]
        row(f"latency {p}, c=1, non-streaming, µs (added)", cells,
            sfx(ratio(g("asc", "latency_c1_us", "added", p), g("litellm", "latency_c1_us", "added", p), True), " less added"))
    for k, kname in (("ttft", "time to first token"), ("ttlt", "time to last token")):
        for p in ("p50", "p99"):
            cells = [span([d[k][p] for d in dstream])] + ["–" for _ in relay]
            cells += [added(g(t, "stream_c1_us", "gateway", k, p), g(t, "stream_c1_us", "added", k, p)) for t in gws]
            row(f"{kname} {p}, c=1, streaming, µs (added)", cells)
    row("health endpoint p50, c=1 (cross-core floor), µs", ["–"] + ["–" for _ in relay] + [f(g(t, "floor_p50_us")) for t in gws])
    for name, desc in (("c64", "requests/s, c=64, non-streaming (closed loop)"),
                       ("c64-stream", "requests/s, c=64, streaming, 8 chunks"),
                       ("c256", "requests/s, c=256, non-streaming")):
        row(desc, [f(g(t, "rps", name)) for t in cols], ratio(g("asc", "rps", name), g("litellm", "rps", name)) if has_ll else "")
    for rate in rates:
        cells = []
        for t in cols:
            o = g(t, "fixed_rate", str(rate))
            cells.append("–" if not o else f"{f(o['p50'])} / {f(o['p99'])} ({f(o['rps'])}/s ok {o['ok']:,}, err {o['errors']:,})")
        row(f"fixed rate {rate:,} req/s (open loop): p50 / p99 µs (achieved)", cells)
    for name, desc in (("c64", "CPU s per 1000 requests, non-streaming (c=64)"),
                       ("c64-stream", "CPU s per 1000 requests, streaming (c=64)")):
        row(desc, [f(g(t, "cpu_s_per_1000", name), 3) for t in cols],
            sfx(ratio(g("asc", "cpu_s_per_1000", name), g("litellm", "cpu_s_per_1000", name), True), " less"))
    for rate in rates:
        row(f"CPU s per 1000 requests at {rate:,} req/s", [f(g(t, "fixed_rate", str(rate), "cpu_s_per_1000"), 3) for t in cols])
    row("RSS idle, MB", [mb(g(t, "rss_kb", "idle")) for t in cols])
    row("RSS at c=256 (largest sample), MB", [mb(g(t, "rss_kb", "c256")) for t in cols])
    os_cells = []
    for t in cols:
        s = g(t, "open_streams")
        os_cells.append("–" if not s else f"{mb(s['rss_kb'])} ({s['opened']:,} of {s['requested']:,} open)")
    row("RSS with many open streams, MB", os_cells)
    row("RSS peak over the whole run (VmHWM), MB", [mb(g(t, "rss_kb", "peak")) for t in cols])
    row("errors (non-2xx, socket) in the wrk runs", [f(g(t, "errors")) for t in cols])

    # Issue 8 targets (ASC).
    tg = []

    def check(desc, value, ok, shown):
        tg.append((desc, shown, "met" if ok else "not met") if value is not None else (desc, "not measured", "–"))

    a = lambda *p: g("asc", *p)
    v = a("latency_c1_us", "added", "p50"); check("added p50 ≤ 50 µs (c=1, non-streaming)", v, v is not None and v <= 50, f"{f(v)} µs")
    r50 = g("relay", "latency_c1_us", "added", "p50")
    if r50 is not None and a("latency_c1_us", "added", "p50") is not None:
        v = a("latency_c1_us", "added", "p50") - r50
        check("added p50 over a do-nothing TCP relay's (the layout's floor) ≤ 50 µs", v, v <= 50,
              f"{f(v)} µs (relay alone adds {f(r50)})")
    v = a("latency_c1_us", "added", "p99"); check("added p99 ≤ 150 µs (c=1, non-streaming)", v, v is not None and v <= 150, f"{f(v)} µs")
    v = a("stream_c1_us", "added", "ttft", "p50"); check("added TTFT p50 ≤ 100 µs", v, v is not None and v <= 100, f"{f(v)} µs")
    v = a("rps", "c64"); check("≥ 20,000 req/s non-streaming, one core", v, v is not None and v >= 20000, f"{f(v)}/s")
    v = a("rps", "c64-stream"); check("≥ 10,000 req/s streaming, one core", v, v is not None and v >= 10000, f"{f(v)}/s")
    if has_ll:
        x, y = a("rps", "c64"), g("litellm", "rps", "c64")
        v = x / y if x and y else None
        check("≥ 200 × LiteLLM's req/s (non-streaming)", v, v is not None and v >= 200, f"×{f(v, 1)}")
        x, y = a("rps", "c64-stream"), g("litellm", "rps", "c64-stream")
        v = x / y if x and y else None
        check("≥ 200 × LiteLLM's req/s (streaming)", v, v is not None and v >= 200, f"×{f(v, 1)}")
    v = a("rss_kb", "idle"); check("RSS idle ≤ 30 MB", v, v is not None and v <= 30 * 1024, f"{mb(v)} MB")
    v = a("rss_kb", "c256"); check("RSS at c=256 ≤ 100 MB", v, v is not None and v <= 100 * 1024, f"{mb(v)} MB")
    s = a("open_streams")
    if s:
        v = s["rss_kb"]
        check(f"RSS with 10,000 open streams ≤ 150 MB ({s['opened']:,} open here)", v,
              v <= 150 * 1024 and s["opened"] >= 10000, f"{mb(v)} MB")
    trows = ["| issue 8 target | ASC | |", "| --- | --- | --- |"] + [f"| {d} | {s_} | {ok} |" for d, s_, ok in tg]

    tools = f"wrk {meta.get('wrk', '?')}" + (f", oha {meta['oha']} (open loop, --latency-correction)" if meta.get("oha") else "")
    notes = [
        f"ASC features on: {meta.get('features', '?')}; recording durability `{meta.get('durability', '?')}`.",
        f"ASC build {meta.get('asc', '?')}. Gateways pinned to core {meta.get('gw_core', '?')}, mock and load generators on core 0; "
        f"{meta.get('cores', '?')} × {meta.get('cpu', '?')}, kernel {meta.get('kernel', '?')}; {meta.get('duration_s', '?')} s per run, "
        f"{rounds} interleaved rounds at c=1; {tools}; {meta.get('date', '?')}.",
    ]
    if has_ll:
        notes.append("LiteLLM: one uvicorn worker (uvloop), no database, master key auth, no callbacks, "
                     "telemetry off, local model cost map.")
    md = "\n".join(rows) + "\n\n" + "\n\n".join(notes) + "\n\n" + "\n".join(trows) + "\n"
    open(os.path.join(out, "results.md"), "w").write(md)
    json.dump({"meta": meta, "targets": res, "issue8_targets": [
        {"target": d, "measured": s_, "status": ok} for d, s_, ok in tg]},
        open(os.path.join(out, "results.json"), "w"), indent=1)
    print(md)


def durability(raw, out):
    m = metrics(raw)
    meta = m.get("meta", {})
    rounds = int(meta.get("rounds", 3))
    rows = ["| durability | added p50, c=1 (µs) | added p99, c=1 (µs) | requests/s, c=64 | vs batched | CPU s per 1000 (c=64) | peak RSS (MB) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    res = {}
    for d in ("batched", "strict", "none"):
        t = f"asc-{d}"
        if m.get(t, {}).get("refused"):
            res[d] = {"refused": m[t]["refused"]}
            rows.append(f"| {d} | refused by the gateway: {m[t]['refused']} | | | | | |")
            continue
        lat = c1(raw, t, rounds)
        w = wrk(f"{raw}/{t}/c64.out")
        if not lat or not w:
            continue
        cpu = per1000(num(m.get(t, {}).get("cpu_s.c64")), w["requests"])
        res[d] = {"added_p50_us": lat["added"]["p50"], "added_p99_us": lat["added"]["p99"],
                  "gateway_p50_us": lat["gateway"]["p50"], "gateway_p99_us": lat["gateway"]["p99"],
                  "direct_p50_us": lat["direct"]["p50"], "rps_c64": w["rps"], "errors_c64": w["errors"],
                  "cpu_s_per_1000_c64": cpu, "peak_rss_kb": num(m.get(t, {}).get("peak_rss_kb"))}
    base = res.get("batched", {}).get("rps_c64")
    for d, r in res.items():
        if "refused" in r:
            continue
        rel = f"{r['rps_c64'] / base * 100:.0f}%" if base else "–"
        r["rps_vs_batched"] = r["rps_c64"] / base if base else None
        rows.append(f"| {d} | {f(r['added_p50_us'])} | {f(r['added_p99_us'])} | {f(r['rps_c64'])} | {rel} | "
                    f"{f(r['cpu_s_per_1000_c64'], 3)} | {mb(r['peak_rss_kb'])} |")
    st = res.get("strict", {}).get("rps_vs_batched")
    verdict = ("not measured" if st is None else
               f"strict is {st * 100:.0f}% of batched: {'met' if st >= 0.8 else 'not met'} (issue 6: within 20%)")
    md = ("\n".join(rows) + "\n\n" +
          f"ASC features on: {meta.get('features', '?')}. Gateway on core {meta.get('gw_core', '?')}, "
          f"{meta.get('duration_s', '?')} s per run, {rounds} interleaved rounds at c=1, ASC build {meta.get('asc', '?')}, "
          f"{meta.get('date', '?')}.\n\nStrict vs batched throughput: {verdict}.\n")
    open(os.path.join(out, "durability.md"), "w").write(md)
    json.dump({"meta": meta, "durability": res}, open(os.path.join(out, "durability.json"), "w"), indent=1)
    print(md)


if __name__ == "__main__":
    mode, raw, out = sys.argv[1:4]
    (full if mode == "full" else durability)(raw, out)
