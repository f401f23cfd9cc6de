#!/usr/bin/env bash
# HTTP/2 through the gateway against nginx and HAProxy, all in front of the same minimal hyper
# backend on loopback, with h2load (many streams on few connections).
#
#   gateway/benches/h2.sh                      # 1 worker each, 3 interleaved rounds of 5 s
#   WORKERS=2 ROUNDS=5 DURATION=10 CONNS=8 STREAMS=16 gateway/benches/h2.sh
#   TARGETS="nginx gateway" gateway/benches/h2.sh
#
# Three workloads, each against every proxy:
# - `GET`: h2c from the client (prior knowledge), HTTP/1.1 keep-alive to the backend; the
#   gateway also serves it through a layered route (`gateway-stack`: admission + breaker +
#   pool + P2C balance, the pool's floor above the streams in flight so that nothing is shed);
# - `post`: small POSTs (a 9-byte body, echoed) over h2c to the proxy and over h2c on to the
#   backend where the proxy speaks it upstream (HAProxy `proto h2`, a gateway cluster with
#   `protocol = "h2c"`); nginx has no HTTP/2 upstream outside `grpc_pass`, so its POSTs go on
#   over HTTP/1.1;
# - `grpc`: unary gRPC calls (`POST /bench.Echo/Echo`, `content-type: application/grpc`,
#   `te: trailers`, one 11-byte length-prefixed message, which the demo upstream echoes with
#   `grpc-status: 0` in trailers) over h2c end to end: nginx `grpc_pass` to an upstream block
#   with `keepalive`, HAProxy `proto h2`, a gateway cluster with `protocol = "h2c"`.
# The rounds interleave the targets, even rounds in reverse order. Only 2xx answers count as
# served; others are printed as failed. A gRPC error comes as a 200 with `grpc-status` other
# than 0, which h2load cannot see: so each gRPC target is checked once
# with nghttp before the timed rounds (status 0 in the trailers, the message echoed), and the
# run stops if one fails.
# It builds `target/release/tollgate` (the backend is `tollgate demo-upstream`), installs nginx,
# HAProxy and h2load (Debian's `nghttp2-client`) with apt-get when missing, pins h2load to
# LOADGEN_CPUS and the servers to SERVER_CPUS, and prints the median requests/s, mean and max
# latency of each, the gateway/nginx and gateway/haproxy ratios, and each proxy's CPU time per
# request (from /proc/PID/stat). On a shared machine compare only figures from the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKERS=${WORKERS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-8}
STREAMS=${STREAMS:-16}
BACKEND_PORT=19100
NGINX_PORT=19180
HAPROXY_PORT=19182
HAPROXY_POST_PORT=19183
GATEWAY_PORT=19184

# shellcheck source=gateway/benches/lib.sh
source gateway/benches/lib.sh
need nginx haproxy h2load:nghttp2-client nghttp:nghttp2-client

# The backend: HTTP/1.1 and h2c on one port.
$PIN_SERVER "$BIN" demo-upstream --listen 127.0.0.1:$BACKEND_PORT >/dev/null &
PIDS+=($!)

{
  nginx_head
  cat <<EOF
  http2_max_concurrent_streams 1024;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  # gRPC's own upstream block: its kept-alive connections are HTTP/2 ones. nginx sends one call
  # per upstream connection at a time, so it keeps up to CONNS × STREAMS of them, each for any
  # number of calls.
  upstream grpc_backend {
    server 127.0.0.1:$BACKEND_PORT;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT http2 reuseport backlog=4096;
    location /bench.Echo/ {
      grpc_pass grpc://grpc_backend;
    }
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$TMP/nginx.conf"
$PIN_SERVER nginx -c "$TMP/nginx.conf" -p "$TMP/nginx" &
PIDS+=($!)

{
  haproxy_head
  cat <<EOF
  option http-keep-alive
  http-reuse always
frontend get
  bind 127.0.0.1:$HAPROXY_PORT proto h2
  default_backend h1
frontend post
  bind 127.0.0.1:$HAPROXY_POST_PORT proto h2
  default_backend h2
backend h1
  server b1 127.0.0.1:$BACKEND_PORT maxconn 256
backend h2
  server b1 127.0.0.1:$BACKEND_PORT proto h2 maxconn 256
EOF
} >"$TMP/haproxy.cfg"
$PIN_SERVER haproxy -db -f "$TMP/haproxy.cfg" &
PIDS+=($!)
HAPROXY_PID=$!

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
max_requests_per_connection = 0
[[listeners]]
name = "bench"
listen = "127.0.0.1:$GATEWAY_PORT"
[[clusters]]
name = "h1"
endpoints = ["127.0.0.1:$BACKEND_PORT"]
[[clusters]]
name = "h2"
endpoints = ["127.0.0.1:$BACKEND_PORT"]
protocol = "h2c"
[[admission]]
name = "bench"
limit = 100000
$(stack_cluster h1-stack $((CONNS * STREAMS * 2)))
[[routes]]
path_prefix = "/stack"
cluster = "h1-stack"
admission = "bench"
[[routes]]
path_prefix = "/post"
cluster = "h2"
[[routes]]
path_prefix = "/bench.Echo/"
cluster = "h2"
[[routes]]
cluster = "h1"
EOF
$PIN_SERVER "$BIN" --config "$TMP/gw.toml" >/dev/null 2>&1 &
PIDS+=($!)
GATEWAY_PID=$!

for p in $BACKEND_PORT $NGINX_PORT $HAPROXY_PORT $HAPROXY_POST_PORT $GATEWAY_PORT; do
  wait_port "$p"
done
NGINX_MASTER=$(cat "$TMP/nginx.pid")

# The POST body, and the gRPC request: a 5-byte prefix (not compressed, length 11) and the
# message (protobuf field 1, bytes "ping-pong").
printf 'ping-pong' >"$TMP/post.bin"
printf '\x00\x00\x00\x00\x0b\x0a\x09ping-pong' >"$TMP/grpc.bin"

TARGETS=${TARGETS:-nginx haproxy gateway gateway-stack nginx-post haproxy-post gateway-post nginx-grpc haproxy-grpc gateway-grpc}
declare -A PORT=([nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [gateway]=$GATEWAY_PORT
  [gateway-stack]=$GATEWAY_PORT
  [nginx-post]=$NGINX_PORT [haproxy-post]=$HAPROXY_POST_PORT [gateway-post]=$GATEWAY_PORT
  [nginx-grpc]=$NGINX_PORT [haproxy-grpc]=$HAPROXY_POST_PORT [gateway-grpc]=$GATEWAY_PORT)
declare -A PID=([nginx]=$NGINX_MASTER [haproxy]=$HAPROXY_PID [gateway]=$GATEWAY_PID
  [gateway-stack]=$GATEWAY_PID
  [nginx-post]=$NGINX_MASTER [haproxy-post]=$HAPROXY_PID [gateway-post]=$GATEWAY_PID
  [nginx-grpc]=$NGINX_MASTER [haproxy-grpc]=$HAPROXY_PID [gateway-grpc]=$GATEWAY_PID)
GRPC_HEADERS=(-H 'content-type: application/grpc' -H 'te: trailers')

# request TARGET: sets `url` and `args` (h2load's and nghttp's options) for its workload.
request() {
  url="http://127.0.0.1:${PORT[$1]}/"
  args=()
  case $1 in
    *-stack) url+="stack" ;;
    *-post) url+="post" args=(-d "$TMP/post.bin") ;;
    *-grpc) url+="bench.Echo/Echo" args=(-d "$TMP/grpc.bin" "${GRPC_HEADERS[@]}") ;;
  esac
}

# grpc_check TARGET: one unary call; stops the run unless the reply carries `grpc-status: 0`
# (in trailers) and echoes the message.
grpc_check() {
  request "$1"
  local body verbose
  body=$(nghttp "${args[@]}" "$url" 2>&1 | od -An -tx1 | tr -d ' \n')
  verbose=$(nghttp -v "${args[@]}" "$url" 2>&1 | tr -d '\0')
  if [[ $body != "$(od -An -tx1 "$TMP/grpc.bin" | tr -d ' \n')" ]] ||
    ! grep -aq 'recv (stream_id=[0-9]*) grpc-status: 0$' <<<"$verbose"; then
    echo "$1: the check call got no echo with grpc-status 0:" >&2
    echo "$verbose" >&2
    exit 1
  fi
  echo "$1: gRPC check ok (message echoed, grpc-status 0)"
}

to_us() { # to_us 1.23ms -> 1230
  awk -v v="$1" 'BEGIN{ n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "s") n *= 1e6; else if (u == "ms") n *= 1e3; printf "%.0f", n }'
}

RESULTS=$TMP/results
: >"$RESULTS"
echo "tollgate HTTP/2 benchmark: $(nproc) cores, workers=$WORKERS, h2load -c$CONNS -m$STREAMS -D$DURATION, $ROUNDS rounds"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $TARGETS; do
  if [[ $t == *-grpc ]]; then grpc_check "$t"; fi
done
for t in $TARGETS; do # warm-up
  request "$t"
  $PIN_LOAD h2load -c "$CONNS" -m "$STREAMS" -D 1 "${args[@]}" "$url" >/dev/null 2>&1 || true
done
for r in $(seq "$ROUNDS"); do
  # shellcheck disable=SC2086 # the targets are words
  for t in $(round_order "$r" $TARGETS); do
    request "$t"
    before=$(ticks "${PID[$t]}")
    out=$($PIN_LOAD h2load -c "$CONNS" -m "$STREAMS" -D "$DURATION" "${args[@]}" "$url" 2>&1 || true)
    after=$(ticks "${PID[$t]}")
    rps=$(echo "$out" | awk '/^finished in/ {print $4}' | tr -d ,)
    # Served: the 2xx answers; failed: every other request that finished (requests still in
    # flight when the time is up are neither; h2load may count the status of one whose body
    # had not ended, hence the floor at 0).
    ok=$(echo "$out" | awk '/^status codes:/ {print $3}')
    failed=$(echo "$out" | awk -v ok="${ok:-0}" '/^requests:/ {print ($8 > ok ? $8 - ok : 0)}')
    rps=$(awk -v r="${rps:-0}" -v ok="${ok:-0}" -v all="$(echo "$out" | awk '/^requests:/ {print $8}')" \
      'BEGIN{ printf "%.0f", (all > 0 ? r * ok / all : 0) }')
    mean=$(to_us "$(echo "$out" | awk '/^time for request:/ {print $6}')")
    max=$(to_us "$(echo "$out" | awk '/^time for request:/ {print $5}')")
    cpu_us=$(awk -v d=$(( after - before )) -v hz="$HZ" -v n="${ok:-0}" 'BEGIN{ if (n > 0) printf "%.1f", d * 1e6 / hz / n; else print "0" }')
    echo "$t ${rps:-0} ${mean:-0} ${max:-0} $cpu_us ${failed:-0}" >>"$RESULTS"
    printf 'round %d %-13s %10.0f req/s  mean %6s us  max %7s us  cpu %6s us/req  failed %s\n' \
      "$r" "$t" "${rps:-0}" "${mean:-0}" "${max:-0}" "$cpu_us" "${failed:-0}"
  done
done

echo
echo "medians over $ROUNDS rounds:"
declare -A MED
for t in $TARGETS; do
  for col in 2 3 4 5; do
    MED[$t,$col]=$(awk -v t="$t" -v c="$col" '$1==t{print $c}' "$RESULTS" | median)
  done
  printf '%-13s %10.0f req/s  mean %6.0f us  max %7.0f us  cpu %6.1f us/req\n' \
    "$t" "${MED[$t,2]}" "${MED[$t,3]}" "${MED[$t,4]}" "${MED[$t,5]}"
done
# The medians as a chart (gateway/benches/chart.py), beside the printed table.
CHART_DIR=${CHART_DIR:-target/bench}
mkdir -p "$CHART_DIR"
for t in $TARGETS; do echo "$t ${MED[$t,2]}"; done |
  python3 gateway/benches/chart.py --title "HTTP/2 proxy, requests per second (medians)" --unit "req/s" \
    --note "$(basename "$0"), $ROUNDS rounds, $(nproc) cores" >"$CHART_DIR/h2.svg" &&
  echo "chart: $CHART_DIR/h2.svg"
has() { [[ " $TARGETS " == *" $1 "* ]]; }
for pair in "gateway nginx" "gateway haproxy" "gateway-stack nginx" "gateway-stack haproxy" \
  "gateway-stack gateway" "gateway-post nginx-post" "gateway-post haproxy-post" \
  "gateway-grpc nginx-grpc" "gateway-grpc haproxy-grpc"; do
  read -r a b <<<"$pair"
  if has "$a" && has "$b"; then
    awk -v ar="${MED[$a,2]}" -v br="${MED[$b,2]}" -v am="${MED[$a,3]}" -v bm="${MED[$b,3]}" \
      -v ac="${MED[$a,5]}" -v bc="${MED[$b,5]}" -v a="$a" -v b="$b" \
      'BEGIN{ printf "%s/%s: req/s %.2fx  mean latency %.2fx  cpu/req %.2fx\n", a, b, ar/br, am/bm, (bc > 0 ? ac/bc : 0) }'
  fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
