#!/usr/bin/env bash
# The gateway against nginx, both in front of the same minimal hyper backend on loopback.
#
#   gateway/benches/proxy.sh                     # 1 worker each, 3 interleaved rounds of 5 s
#   WORKERS=2 ROUNDS=5 DURATION=10 gateway/benches/proxy.sh
#   IDLE_CONNS=0 gateway/benches/proxy.sh        # skip the idle keep-alive memory check
#   TARGETS="backend nginx gateway" gateway/benches/proxy.sh   # only some of the targets
#   BEFORE_BIN=/path/to/older/tollgate gateway/benches/proxy.sh  # an older build beside this one
#
# What it does:
# - builds `target/release/tollgate` (the backend is `tollgate demo-upstream`, a bare hyper
#   server on a current-thread runtime);
# - installs nginx, HAProxy and wrk with apt-get when missing;
# - pins the load generator to LOADGEN_CPUS and backend + proxy to SERVER_CPUS (on a 2-core
#   machine: wrk on core 0, everything else on core 1), same worker count for nginx and the
#   gateway;
# - runs wrk against the backend directly, nginx, HAProxy, the gateway (thread-per-core) and the gateway
#   in multi-thread-runtime mode (`gateway-mt`), the gateway's full layer stack (`gateway-stack`:
#   admission + breaker + pool + balance on `/stack`), the same stack with a retry policy
#   (`gateway-retried`, on `/retried`), the same behind a route cache that every request misses
#   (`gateway-retry`: a new query string each time, on `/retry`), a cached route (`gateway-cache`: every
#   request a cache hit on `/cached`) and the plain route with the HTTP/1.1 fast path off
#   (`gateway-hyper`: every request through hyper's HTTP/1.1) and the plain route with tracing on
#   (`gateway-traced`: every request sampled, spans exported over OTLP/HTTP to a local sink that
#   answers 200 and discards them) in interleaved rounds (even rounds in reverse order) and
#   prints the median RPS and p50/p99/p99.9 latency of each, the gateway/nginx ratios, and the
#   CPU time per request of each proxy (from /proc/PID/stat, backend excluded);
# - opens IDLE_CONNS keep-alive connections (one request each, then idle) to each proxy, paced
#   (2000/s) and then all at once, and prints its resident memory.
# On a shared or noisy machine compare only figures from the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
IDLE_CONNS=${IDLE_CONNS:-10000}
BACKEND_PORT=19000
NGINX_PORT=19080
GATEWAY_PORT=19081
GATEWAY_MT_PORT=19082
GATEWAY_HYPER_PORT=19083
HAPROXY_PORT=19084
GATEWAY_TRACED_PORT=19085
GATEWAY_BEFORE_PORT=19087
OTLP_PORT=19086

# shellcheck source=gateway/benches/lib.sh
source gateway/benches/lib.sh
need nginx haproxy wrk

# The backend.
$PIN_SERVER "$BIN" demo-upstream --listen 127.0.0.1:$BACKEND_PORT >/dev/null &
PIDS+=($!)
BACKEND_PID=$!

# nginx, as commonly tuned for a keep-alive reverse proxy.
{
  nginx_head
  cat <<EOF
  keepalive_timeout 120s;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
} >"$TMP/nginx.conf"
$PIN_SERVER nginx -c "$TMP/nginx.conf" -p "$TMP/nginx" &
PIDS+=($!)

# HAProxy, the other anchor: same backend, same worker count (nbthread), keep-alive both ways
# and idle upstream connections shared between clients, as a reverse proxy is commonly tuned.
{
  haproxy_head
  cat <<EOF
  timeout http-keep-alive 120s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend bench
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend app
backend app
  server b1 127.0.0.1:$BACKEND_PORT maxconn 256
EOF
} >"$TMP/haproxy.cfg"
$PIN_SERVER haproxy -db -f "$TMP/haproxy.cfg" &
PIDS+=($!)
HAPROXY_PID=$!

# The gateway: same backend, same worker count, access log off.
cat >"$TMP/gw.toml" <<EOF
[server]
workers = $WORKERS
[admin]
listen = ""
[log]
level = "warn"
access_log = false
[timeouts]
header_read_ms = 120000
idle_ms = 120000
[limits]
# as nginx's keepalive_requests above: no reconnects in the middle of a run
max_requests_per_connection = 1000000
[[listeners]]
name = "bench"
listen = "127.0.0.1:$GATEWAY_PORT"
[[admission]]
name = "bench"
limit = 100000
classes = ["high", "normal"]
class_header = "x-priority"
default_class = "normal"
[[clusters]]
name = "backend"
endpoints = ["127.0.0.1:$BACKEND_PORT"]
$(stack_cluster backend-stack 100)
[[routes]]
path_prefix = "/stack"
cluster = "backend-stack"
admission = "bench"
$(stack_cluster backend-retry 100)
[clusters.retry]
[[routes]]
path_prefix = "/retried"
cluster = "backend-retry"
admission = "bench"
[[routes]]
path_prefix = "/cached"
cluster = "backend"
[routes.cache]
default_ttl_ms = 3600000
[[routes]]
path_prefix = "/retry"
cluster = "backend-retry"
admission = "bench"
[routes.cache]
default_ttl_ms = 3600000
[[routes]]
cluster = "backend"
EOF
$PIN_SERVER "$BIN" --config "$TMP/gw.toml" >/dev/null &
PIDS+=($!)
GATEWAY_PID=$!
# The same gateway in multi-thread-runtime mode, for comparison.
sed "s/127.0.0.1:$GATEWAY_PORT/127.0.0.1:$GATEWAY_MT_PORT/" "$TMP/gw.toml" >"$TMP/gw-mt.toml"
$PIN_SERVER "$BIN" --config "$TMP/gw-mt.toml" --mode multi-thread >/dev/null &
PIDS+=($!)
GATEWAY_MT_PID=$!
# The same gateway with every request on hyper's HTTP/1.1 path (no fast path), for comparison.
sed -e "s/127.0.0.1:$GATEWAY_PORT/127.0.0.1:$GATEWAY_HYPER_PORT/" -e 's/^workers = .*/&\nh1_fast_path = false/' \
  "$TMP/gw.toml" >"$TMP/gw-hyper.toml"
$PIN_SERVER "$BIN" --config "$TMP/gw-hyper.toml" >/dev/null &
PIDS+=($!)
GATEWAY_HYPER_PID=$!

# The same gateway with tracing on: every request sampled and exported (OTLP/HTTP, batched) to
# a sink that answers 200 and keeps nothing, so the figure is the gateway's own cost.
cat >"$TMP/otlp_sink.py" <<'EOF'
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
EOF
python3 "$TMP/otlp_sink.py" $OTLP_PORT &
PIDS+=($!)
sed -e "s/127.0.0.1:$GATEWAY_PORT/127.0.0.1:$GATEWAY_TRACED_PORT/" "$TMP/gw.toml" >"$TMP/gw-traced.toml"
printf '[tracing]\notlp_endpoint = "http://127.0.0.1:%s"\nsample_ratio = 1.0\n' $OTLP_PORT >>"$TMP/gw-traced.toml"
$PIN_SERVER "$BIN" --config "$TMP/gw-traced.toml" >/dev/null &
PIDS+=($!)
GATEWAY_TRACED_PID=$!

# BEFORE_BIN: an older build of the gateway (another commit's `target/release/tollgate`) with
# the same config on its own port, as the targets `gateway-before` (plain route) and
# `gateway-stack-before` (layered route), so that two builds are compared in one run. The
# `[limits]` lines are left out: builds before #18 do not know them.
GATEWAY_BEFORE_PID=
if [ -n "${BEFORE_BIN:-}" ]; then
  sed -e "s/127.0.0.1:$GATEWAY_PORT/127.0.0.1:$GATEWAY_BEFORE_PORT/" -e '/^\[limits\]/d' \
    -e '/^max_requests_per_connection/d' -e '/^# as nginx/d' "$TMP/gw.toml" >"$TMP/gw-before.toml"
  $PIN_SERVER "$BEFORE_BIN" --config "$TMP/gw-before.toml" >/dev/null &
  PIDS+=($!)
  GATEWAY_BEFORE_PID=$!
fi

wait_port $BACKEND_PORT
wait_port $NGINX_PORT
wait_port $HAPROXY_PORT
wait_port $GATEWAY_PORT
wait_port $GATEWAY_MT_PORT
wait_port $GATEWAY_HYPER_PORT
wait_port $GATEWAY_TRACED_PORT
[ -n "$GATEWAY_BEFORE_PID" ] && wait_port $GATEWAY_BEFORE_PORT
NGINX_MASTER=$(cat "$TMP/nginx.pid")

# `gateway-retry` asks for a new URL each time (a query counter), so that every request
# misses the route's cache and goes through the retry layer and the stack.
cat >"$TMP/unique.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/retry?n=" .. n)
end
EOF
cat >"$TMP/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
cat "$TMP/report.lua" >>"$TMP/unique.lua"

TARGETS=${TARGETS:-backend nginx haproxy gateway gateway-hyper gateway-mt gateway-stack gateway-retried gateway-retry gateway-cache gateway-traced${BEFORE_BIN:+ gateway-before gateway-stack-before}}
declare -A PORT=([backend]=$BACKEND_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [gateway]=$GATEWAY_PORT [gateway-hyper]=$GATEWAY_HYPER_PORT [gateway-mt]=$GATEWAY_MT_PORT [gateway-stack]=$GATEWAY_PORT [gateway-retried]=$GATEWAY_PORT [gateway-retry]=$GATEWAY_PORT [gateway-cache]=$GATEWAY_PORT [gateway-traced]=$GATEWAY_TRACED_PORT [gateway-before]=$GATEWAY_BEFORE_PORT [gateway-stack-before]=$GATEWAY_BEFORE_PORT)
declare -A URLPATH=([backend]=/ [nginx]=/ [haproxy]=/ [gateway]=/ [gateway-hyper]=/ [gateway-mt]=/ [gateway-stack]=/stack [gateway-retried]=/retried [gateway-retry]=/retry [gateway-cache]=/cached [gateway-traced]=/ [gateway-before]=/ [gateway-stack-before]=/stack)
declare -A PID=([backend]=$BACKEND_PID [nginx]=$NGINX_MASTER [haproxy]=$HAPROXY_PID [gateway]=$GATEWAY_PID [gateway-hyper]=$GATEWAY_HYPER_PID [gateway-mt]=$GATEWAY_MT_PID [gateway-stack]=$GATEWAY_PID [gateway-retried]=$GATEWAY_PID [gateway-retry]=$GATEWAY_PID [gateway-cache]=$GATEWAY_PID [gateway-traced]=$GATEWAY_TRACED_PID [gateway-before]=$GATEWAY_BEFORE_PID [gateway-stack-before]=$GATEWAY_BEFORE_PID)
RESULTS=$TMP/results
: >"$RESULTS"
echo "tollgate proxy benchmark: $(nproc) cores, workers=$WORKERS, wrk -t$THREADS -c$CONNS -d${DURATION}s, $ROUNDS rounds, load on cpus ${LOADGEN_CPUS:-any}, servers on ${SERVER_CPUS:-any}"
# Warm-up.
for t in $TARGETS; do
  $PIN_LOAD wrk -t"$THREADS" -c"$CONNS" -d1s "http://127.0.0.1:${PORT[$t]}${URLPATH[$t]}" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  # shellcheck disable=SC2086 # the targets are words
  for t in $(round_order "$r" $TARGETS); do
    before=$(ticks "${PID[$t]}")
    script=$TMP/report.lua
    [ "$t" = gateway-retry ] && script=$TMP/unique.lua
    line=$($PIN_LOAD wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$script" \
      "http://127.0.0.1:${PORT[$t]}${URLPATH[$t]}" | grep '^RESULT')
    after=$(ticks "${PID[$t]}")
    read -r _ rps p50 p99 p999 reqs errs <<<"$line"
    cpu_us=$(awk -v d=$(( after - before )) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.1f", d * 1e6 / hz / n}')
    echo "$t $rps $p50 $p99 $p999 $cpu_us $errs" >>"$RESULTS"
    printf 'round %d %-13s %10.0f rps  p50 %5d us  p99 %5d us  p99.9 %5d us  cpu %6s us/req  errors %d\n' \
      "$r" "$t" "$rps" "$p50" "$p99" "$p999" "$cpu_us" "$errs"
  done
done

echo
echo "medians over $ROUNDS rounds:"
declare -A MED
for t in $TARGETS; do
  for col in 2 3 4 5 6; do
    MED[$t,$col]=$(awk -v t="$t" -v c="$col" '$1==t{print $c}' "$RESULTS" | median)
  done
  printf '%-13s %10.0f rps  p50 %6.0f us  p99 %6.0f us  p99.9 %6.0f us  cpu %6.1f us/req\n' \
    "$t" "${MED[$t,2]}" "${MED[$t,3]}" "${MED[$t,4]}" "${MED[$t,5]}" "${MED[$t,6]}"
done
# The medians as a chart (gateway/benches/chart.py), beside the printed table.
CHART_DIR=${CHART_DIR:-target/bench}
mkdir -p "$CHART_DIR"
for t in $TARGETS; do echo "$t ${MED[$t,2]}"; done |
  python3 gateway/benches/chart.py --title "HTTP/1.1 proxy, requests per second (medians)" --unit "rps" \
    --note "$(basename "$0"), $ROUNDS rounds, $(nproc) cores" >"$CHART_DIR/proxy.svg" &&
  echo "chart: $CHART_DIR/proxy.svg"
has() { [[ " $TARGETS " == *" $1 "* ]]; }
if has gateway && has nginx; then
  awk -v gr="${MED[gateway,2]}" -v nr="${MED[nginx,2]}" -v g99="${MED[gateway,4]}" -v n99="${MED[nginx,4]}" \
    -v gc="${MED[gateway,6]}" -v nc="${MED[nginx,6]}" -v g999="${MED[gateway,5]}" -v n999="${MED[nginx,5]}" \
    'BEGIN{printf "gateway/nginx: rps %.2fx  p99 %.2fx  p99.9 %.2fx  cpu/req %.2fx\n", gr/nr, g99/n99, g999/n999, gc/nc}'
fi
if has gateway && has haproxy; then
  awk -v gr="${MED[gateway,2]}" -v hr="${MED[haproxy,2]}" -v g99="${MED[gateway,4]}" -v h99="${MED[haproxy,4]}" \
    -v gc="${MED[gateway,6]}" -v hc="${MED[haproxy,6]}" \
    'BEGIN{printf "gateway/haproxy: rps %.2fx  p99 %.2fx  cpu/req %.2fx\n", gr/hr, g99/h99, gc/hc}'
fi
if has gateway-stack && has nginx && has haproxy; then
  awk -v sr="${MED[gateway-stack,2]}" -v nr="${MED[nginx,2]}" -v hr="${MED[haproxy,2]}" \
    -v s99="${MED[gateway-stack,4]}" -v n99="${MED[nginx,4]}" -v h99="${MED[haproxy,4]}" \
    'BEGIN{printf "layered route/nginx: rps %.2fx  p99 %.2fx; layered route/haproxy: rps %.2fx  p99 %.2fx (target: rps >= 1.0x, p99 <= 1.0x)\n", sr/nr, s99/n99, sr/hr, s99/h99}'
fi
if has gateway && has gateway-hyper; then
  awk -v gr="${MED[gateway,2]}" -v hr="${MED[gateway-hyper,2]}" -v gc="${MED[gateway,6]}" -v hc="${MED[gateway-hyper,6]}" \
    'BEGIN{printf "fast path/hyper path (plain route): rps %.2fx  cpu/req %.2fx\n", gr/hr, gc/hc}'
fi
if has gateway && has gateway-mt; then
  awk -v gr="${MED[gateway,2]}" -v mr="${MED[gateway-mt,2]}" -v gc="${MED[gateway,6]}" -v mc="${MED[gateway-mt,6]}" \
    'BEGIN{printf "multi-thread/thread-per-core gateway: rps %.2fx  cpu/req %.2fx\n", mr/gr, mc/gc}'
fi
if has gateway && has gateway-stack; then
  awk -v gr="${MED[gateway,2]}" -v sr="${MED[gateway-stack,2]}" -v gc="${MED[gateway,6]}" -v sc="${MED[gateway-stack,6]}" \
    'BEGIN{printf "full stack/plain route (fast path): rps %.2fx  cpu/req %.2fx\n", sr/gr, sc/gc}'
fi
if has gateway && has gateway-retried; then
  awk -v gr="${MED[gateway,2]}" -v rr="${MED[gateway-retried,2]}" -v gc="${MED[gateway,6]}" -v rc="${MED[gateway-retried,6]}" \
    'BEGIN{printf "retry route/plain route: rps %.2fx  cpu/req %.2fx\n", rr/gr, rc/gc}'
fi
if has gateway && has gateway-retry; then
  awk -v gr="${MED[gateway,2]}" -v rr="${MED[gateway-retry,2]}" -v gc="${MED[gateway,6]}" -v rc="${MED[gateway-retry,6]}" \
    'BEGIN{printf "retry + cache-miss route/plain route: rps %.2fx  cpu/req %.2fx (target: rps >= 0.90x)\n", rr/gr, rc/gc}'
fi
if has gateway-hyper && has gateway-stack; then
  # The layered route runs on hyper's HTTP/1.1: against the plain route on hyper, the ratio is
  # the layers' own cost.
  awk -v hr="${MED[gateway-hyper,2]}" -v sr="${MED[gateway-stack,2]}" -v hc="${MED[gateway-hyper,6]}" -v sc="${MED[gateway-stack,6]}" \
    'BEGIN{printf "full stack/plain route (both on hyper): rps %.2fx  cpu/req %.2fx (target: rps >= 0.90x)\n", sr/hr, sc/hc}'
fi
if has gateway && has gateway-traced; then
  awk -v gr="${MED[gateway,2]}" -v tr="${MED[gateway-traced,2]}" -v gc="${MED[gateway,6]}" -v tc="${MED[gateway-traced,6]}" \
    -v g99="${MED[gateway,4]}" -v t99="${MED[gateway-traced,4]}" \
    'BEGIN{printf "tracing on/off (plain route): rps %.2fx  p99 %.2fx  cpu/req %+.1f us\n", tr/gr, t99/g99, tc-gc}'
fi
for pair in "gateway gateway-before" "gateway-stack gateway-stack-before"; do
  read -r now then <<<"$pair"
  if has "$now" && has "$then"; then
    awk -v t="$now" -v nr="${MED[$now,2]}" -v br="${MED[$then,2]}" -v n99="${MED[$now,4]}" -v b99="${MED[$then,4]}" \
      -v nc="${MED[$now,6]}" -v bc="${MED[$then,6]}" \
      'BEGIN{printf "%s, this build/BEFORE_BIN: rps %.2fx  p99 %.2fx  cpu/req %.2fx\n", t, nr/br, n99/b99, nc/bc}'
  fi
done
if has nginx && has gateway-cache; then
  awk -v cr="${MED[gateway-cache,2]}" -v nr="${MED[nginx,2]}" \
    'BEGIN{printf "cache-hit route/nginx proxy: rps %.2fx (target: >= 2x)\n", cr/nr}'
fi

if [ "$IDLE_CONNS" -gt 0 ]; then
  echo
  cat >"$TMP/idle.py" <<'EOF'
import socket, sys, time
port, n, rate, pids = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), [int(p) for p in sys.argv[4:]]
def rss_kib():
    total = 0
    for p in pids:
        try:
            kids = open(f"/proc/{p}/task/{p}/children").read().split()
        except OSError:
            kids = []
        for q in [p] + [int(k) for k in kids]:
            for line in open(f"/proc/{q}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total
before = rss_kib()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    socks.append(s)
    if rate and i % 100 == 99:
        time.sleep(100 / rate)
ok = 0
for s in socks:
    if s.recv(65536).startswith(b"HTTP/1.1 200"):
        ok += 1
time.sleep(2)  # idle: well past the gateway's park_ms (100 ms)
after = rss_kib()
how = f"opened at {rate:.0f}/s" if rate else "opened at once"
print(f"{ok} idle keep-alive connections ({how}): RSS {before/1024:.1f} MiB before, {after/1024:.1f} MiB with them open (+{(after-before)/n:.2f} KiB per connection)")
for s in socks:
    s.close()
EOF
  # Paced first (steady state), then all at once (a burst: the allocator keeps the transient
  # peak, so this is the worst case).
  for rate in 2000 0; do
    printf 'nginx:   '; python3 "$TMP/idle.py" $NGINX_PORT "$IDLE_CONNS" $rate "$NGINX_MASTER"
    sleep 1
    printf 'gateway: '; python3 "$TMP/idle.py" $GATEWAY_PORT "$IDLE_CONNS" $rate "$GATEWAY_PID"
    sleep 1
  done
fi
