#!/usr/bin/python3
"""metrics.py - figures from two /metrics snapshots (Prometheus text).

usage:
  metrics.py delta BEFORE AFTER NAME [LABEL_REGEX]   counter/gauge difference
  metrics.py quantile BEFORE AFTER HIST Q...          quantiles of the histogram
                                                      observations between the
                                                      snapshots (linear within a
                                                      bucket, like histogram_quantile)
  metrics.py mean BEFORE AFTER HIST                   sum/count between snapshots
  metrics.py percentile FILE Q...                     quantiles of one number per line
"""
import math
import re
import sys

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def load(path):
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        if line.startswith("#") or not line.strip():
            continue
        m = LINE.match(line)
        if m:
            out.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return out


def total(samples, name, lre=""):
    return sum(v for n, l, v in samples if n == name and (not lre or re.search(lre, l)))


def buckets(samples, name):
    b = {}
    for n, l, v in samples:
        if n == name + "_bucket":
            m = re.search(r'le="([^"]*)"', l)
            le = math.inf if m.group(1) in ("+Inf", "Inf") else float(m.group(1))
            b[le] = b.get(le, 0) + v
    return b


def hquantile(b0, b1, q):
    les = sorted(b1)
    cum = [(le, b1[le] - b0.get(le, 0)) for le in les]
    n = cum[-1][1] if cum else 0
    if n <= 0:
        return float("nan")
    rank = q * n
    prev_le, prev_c = 0.0, 0.0
    for le, c in cum:
        if c >= rank:
            if le == math.inf:
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def main(a):
    if not a:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = a[0]
    if cmd == "delta":
        s0, s1 = load(a[1]), load(a[2])
        lre = a[4] if len(a) > 4 else ""
        print("%g" % (total(s1, a[3], lre) - total(s0, a[3], lre)))
    elif cmd == "quantile":
        s0, s1 = load(a[1]), load(a[2])
        b0, b1 = buckets(s0, a[3]), buckets(s1, a[3])
        print(" ".join("%g" % hquantile(b0, b1, float(q)) for q in a[4:]))
    elif cmd == "mean":
        s0, s1 = load(a[1]), load(a[2])
        c = total(s1, a[3] + "_count") - total(s0, a[3] + "_count")
        s = total(s1, a[3] + "_sum") - total(s0, a[3] + "_sum")
        print("%g" % (s / c if c else float("nan")))
    elif cmd == "percentile":
        v = sorted(float(x) for x in open(a[1]) if x.strip())
        out = []
        for q in a[2:]:
            if not v:
                out.append("nan")
                continue
            k = min(len(v) - 1, max(0, int(math.ceil(float(q) * len(v))) - 1))
            out.append("%g" % v[k])
        print(" ".join(out))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
