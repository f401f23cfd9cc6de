#!/usr/bin/env python3
"""A horizontal bar chart, as a self-contained SVG, of the figures a bench prints.

Reads `TARGET VALUE [NOTE...]` lines (one per bar, in order) on standard input and writes the
SVG to standard output; a NOTE is printed after the bar's value. The anchors (nginx, HAProxy) and the bare backend are drawn grey, the gateway's
bars blue, and each bar carries its value and its ratio to nginx: to the nginx bar of the same
workload (`gateway-grpc` to `nginx-grpc`) where the chart has one, else to the first nginx bar.

    printf 'nginx 39989\\ngateway 42217\\n' | python3 gateway/benches/chart.py \\
        --title 'HTTP/1.1 proxy, requests per second' --unit 'req/s' >proxy.svg

Used by `proxy.sh` and `h2.sh` (they write `target/bench/*.svg` after each run); the charts in
`docs/` are drawn by it from the figures in the README.
"""

import argparse
import html
import sys

# What the benches call their targets, as a reader would.
LABELS = {
    "backend": "bare hyper backend",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "gateway": "tollgate, plain route",
    "gateway-hyper": "tollgate, plain route on hyper",
    "gateway-mt": "tollgate, multi-thread runtime",
    "gateway-stack": "tollgate, admission+breaker+pool+balance",
    "gateway-cache": "tollgate, cache hit",
    "gateway-traced": "tollgate, plain route, traced",
    "nginx-post": "nginx, POST",
    "haproxy-post": "HAProxy, POST",
    "gateway-post": "tollgate, POST",
    "nginx-grpc": "nginx, unary gRPC (grpc_pass)",
    "haproxy-grpc": "HAProxy, unary gRPC",
    "gateway-grpc": "tollgate, unary gRPC (h2c cluster)",
    "gateway-before": "tollgate (BEFORE_BIN), plain route",
    "gateway-stack-before": "tollgate (BEFORE_BIN), layered route",
}


def is_anchor(target):
    return target.split("-")[0] in ("nginx", "haproxy", "backend")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--title", required=True)
    ap.add_argument("--unit", default="req/s")
    ap.add_argument("--note", default="", help="a line under the title (the command, the machine)")
    ap.add_argument("--no-ratio", action="store_true", help="leave out each bar's ratio to nginx")
    args = ap.parse_args()

    bars = []
    for line in sys.stdin:
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            bars.append((parts[0], float(parts[1]), " ".join(parts[2:])))
        except ValueError:
            sys.exit(f"chart.py: not a number in {line.strip()!r}")
    if not bars:
        sys.exit("chart.py: no figures on standard input")

    nginx = {t: v for t, v, _ in bars if t.split("-")[0] == "nginx"}
    first = None if args.no_ratio else next(iter(nginx.values()), None)
    top = max(v for _, v, _ in bars) or 1.0
    label_w, bar_w, row_h, pad = 300, 420, 26, 12
    head = 54 if args.note else 38
    width = label_w + bar_w + (330 if any(n for _, _, n in bars) else 190)
    height = head + row_h * len(bars) + pad

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{pad}" y="22" font-size="15" font-weight="bold">{html.escape(args.title)}</text>',
    ]
    if args.note:
        out.append(f'<text x="{pad}" y="40" fill="#555555">{html.escape(args.note)}</text>')
    for i, (target, value, note) in enumerate(bars):
        y = head + i * row_h
        w = max(1.0, bar_w * value / top)
        colour = "#9e9e9e" if is_anchor(target) else "#2f6fb3"
        label = LABELS.get(target, target)
        text = f"{value:,.0f} {args.unit}"
        workload = target.partition("-")[2]
        anchor = nginx.get(f"nginx-{workload}", first) if first else None
        if anchor and not target.startswith("nginx"):
            text += f"  ({value / anchor:.2f}x nginx)"
        if note:
            text += f"  {note}"
        out += [
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{html.escape(label)}</text>',
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}"/>',
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}" fill="#333333">{html.escape(text)}</text>',
        ]
    out.append("</svg>")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
