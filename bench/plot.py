"""Latency plot for bench/run (PLOT=1): plot.py results.json out.png. Needs matplotlib."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

res = json.load(open(sys.argv[1]))
meta, T = res["meta"], res["targets"]
names = [t for t in ("direct", "asc", "litellm") if t in T]
label = {"direct": "direct (mock)", "asc": "ASC", "litellm": f"LiteLLM {meta.get('litellm', '')}"}
color = {"direct": "#888888", "asc": "#1f77b4", "litellm": "#d62728"}
pcts = ["p50", "p90", "p99"]

fig, ax = plt.subplots(1, 3, figsize=(15, 4.8))


def bars(a, title, get):
    w = 0.8 / len(names)
    for i, t in enumerate(names):
        ys = [get(t, p) for p in pcts]
        xs = [j + i * w for j in range(len(pcts))]
        a.bar(xs, [y or 0 for y in ys], w, label=label[t], color=color[t])
        for x, y in zip(xs, ys):
            if y:
                a.text(x, y, f"{y:,.0f}", ha="center", va="bottom", fontsize=7)
    a.set_xticks([j + 0.4 - w / 2 for j in range(len(pcts))], pcts)
    a.set_yscale("log")
    a.set_ylim(top=a.get_ylim()[1] * 4)
    a.set_ylabel("µs (log)")
    a.set_title(title)
    a.legend(fontsize=8, loc="upper left")


def c1(t, p):
    lat = T[t].get("latency_c1_us", {})
    v = (lat.get("gateway") or lat.get("direct") or {}).get(p)
    return min(v) if isinstance(v, list) else v  # direct: one value per gateway phase


def ttft(t, p):
    if t == "direct":
        s = T.get("asc", {}).get("stream_c1_us", {})
        return s.get("direct", {}).get("ttft", {}).get(p)
    return T[t].get("stream_c1_us", {}).get("gateway", {}).get("ttft", {}).get(p)


bars(ax[0], "non-streaming latency, c=1", c1)
bars(ax[1], "time to first token, c=1", ttft)
a = ax[2]
for t in names:
    fr = T[t].get("fixed_rate", {})
    rates = sorted(int(r) for r in fr)
    for p, style in (("p50", "-o"), ("p99", "--s")):
        ys = [fr[str(r)].get(p) for r in rates]
        if rates:
            a.plot(rates, ys, style, color=color[t], label=f"{label[t]} {p}")
a.set_xscale("log")
a.set_yscale("log")
a.set_xlabel("offered rate, requests/s (open loop)")
a.set_ylabel("latency µs (log)")
a.set_title("fixed-rate latency (oha, corrected)")
a.legend(fontsize=7)
fig.suptitle(f"ASC bench {meta.get('date', '')}: gateways on one core; durability {meta.get('durability', '')}")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
