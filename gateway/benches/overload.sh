#!/usr/bin/env bash
# Overload: open-loop load at 0.8x, 1.5x and 3x the capacity of a backend with a fixed number of
# workers and a jittery service time, through the gateway with its default `[clusters.pool]`,
# through nginx and through HAProxy (with its `maxconn` queue), in the same run.
#
#   gateway/benches/overload.sh                       # 10 workers x 10 ms ±20%: 1000 req/s
#   WORKERS_BACKEND=4 SERVICE_MS=10 JITTER=0.5 gateway/benches/overload.sh
#   LEVELS="0.8 1.5 3" DURATION=12 WARMUP=4 TIMEOUT=1 gateway/benches/overload.sh
#   TARGETS="nginx gateway" gateway/benches/overload.sh
#
# What it does:
# - builds `target/release/tollgate` and the generator (`gateway/examples/openloop.rs`: Poisson
#   arrivals at a rate, a task and if need be a connection per request, latency counted from
#   when a request was due, the client giving up after TIMEOUT seconds);
# - starts `tollgate demo-upstream --kind busy`: WORKERS_BACKEND requests at a time, each for
#   SERVICE_MS ± JITTER (uniform), the rest in a FIFO queue; capacity C = workers / service time;
# - in front of it, on the same core: nginx (proxy_pass with keep-alive: no limit), HAProxy
#   (`maxconn` = the backend's workers, so the excess waits in HAProxy's queue, `timeout queue`
#   = the client's timeout, `option abortonclose`: the common way to protect a backend with
#   HAProxy, and one that needs the worker count), and the gateway with an empty
#   `[clusters.pool]` (every setting its default: nothing about the backend is told);
# - first an unloaded run (0.3x C) through each, for the unloaded p99, then each level through
#   each target, interleaved, with a pause between runs so the backend's queue drains;
# - prints, per level and target: goodput (2xx a second) and its share of what could be served
#   (min(offered, the backend's throughput measured closed loop with wrk just before)), rejected (429/503) and timed-out requests, p50/p99 of the 2xx answers and
#   the p99 over the target's unloaded p99; then whether the gateway met the goal at every level
#   (goodput >= 95% of min(offered, C), p99 <= 2x its unloaded p99). The figures are also
#   drawn as a chart, `target/bench/overload.svg` (gateway/benches/chart.py).
# On a shared or noisy machine compare only figures from the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKERS=${WORKERS:-1}
WORKERS_BACKEND=${WORKERS_BACKEND:-10}
SERVICE_MS=${SERVICE_MS:-10}
JITTER=${JITTER:-0.2}
LEVELS=${LEVELS:-0.8 1.5 3}
DURATION=${DURATION:-12}
WARMUP=${WARMUP:-4}
TIMEOUT=${TIMEOUT:-1}
PAUSE=${PAUSE:-2}
TARGETS=${TARGETS:-nginx haproxy gateway}
BACKEND_PORT=19300
NGINX_PORT=19301
HAPROXY_PORT=19302
GATEWAY_PORT=19303
ADMIN_PORT=19304

# shellcheck source=gateway/benches/lib.sh
source gateway/benches/lib.sh
need nginx haproxy wrk
cargo build --release -p tollgate-gateway --example openloop -q
GEN=$PWD/target/release/examples/openloop
CAPACITY=$(awk -v w="$WORKERS_BACKEND" -v s="$SERVICE_MS" 'BEGIN { printf "%d", w * 1000 / s }')

$PIN_SERVER "$BIN" demo-upstream --listen 127.0.0.1:$BACKEND_PORT --kind busy \
  --delay-ms "$SERVICE_MS" --workers "$WORKERS_BACKEND" --jitter "$JITTER" --threads 1 >/dev/null &
PIDS+=($!)

{
  nginx_head
  cat <<EOF
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 256; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
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
  timeout queue ${TIMEOUT}s
  timeout http-keep-alive 120s
  option http-keep-alive
  option abortonclose
  http-reuse always
frontend bench
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend app
backend app
  server b1 127.0.0.1:$BACKEND_PORT maxconn $WORKERS_BACKEND
EOF
} >"$TMP/haproxy.cfg"
$PIN_SERVER haproxy -db -f "$TMP/haproxy.cfg" &
PIDS+=($!)

cat >"$TMP/gw.toml" <<EOF
[server]
workers = $WORKERS
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[log]
level = "error"
access_log = false
[[listeners]]
name = "bench"
listen = "127.0.0.1:$GATEWAY_PORT"
[[clusters]]
name = "backend"
endpoints = ["127.0.0.1:$BACKEND_PORT"]
# Every setting its default: the pool learns the backend.
[clusters.pool]
[[routes]]
cluster = "backend"
EOF
$PIN_SERVER "$BIN" --config "$TMP/gw.toml" >/dev/null &
PIDS+=($!)

wait_port $BACKEND_PORT
wait_port $NGINX_PORT
wait_port $HAPROXY_PORT
wait_port $GATEWAY_PORT

port() {
  case $1 in
    nginx) echo $NGINX_PORT ;;
    haproxy) echo $HAPROXY_PORT ;;
    gateway) echo $GATEWAY_PORT ;;
    backend) echo $BACKEND_PORT ;;
    *) echo "unknown target $1" >&2; exit 1 ;;
  esac
}

# pool_limit: the gateway pool's limit now, from the admin `/state`.
pool_limit() {
  curl -s "http://127.0.0.1:$ADMIN_PORT/state" | python3 -c '
import json, sys
def find(v):
    if isinstance(v, dict):
        if isinstance(v.get("pool"), dict) and "limit" in v["pool"]:
            return v["pool"]["limit"]
        v = list(v.values())
    if isinstance(v, list):
        for x in v:
            r = find(x)
            if r is not None:
                return r
print("%.1f" % (find(json.load(sys.stdin)) or 0))'
}

# load TARGET LEVEL SEED: one open-loop run at LEVEL x capacity; prints the generator's line
# (with the gateway pool's limit at the end of the run, for the gateway).
load() {
  local rate out
  rate=$(awk -v c="$CAPACITY" -v l="$2" 'BEGIN { printf "%d", c * l }')
  out=$($PIN_LOAD "$GEN" --url "http://127.0.0.1:$(port "$1")/" --rate "$rate" \
    --duration "$DURATION" --warmup "$WARMUP" --timeout "$TIMEOUT" --seed "$3")
  [ "$1" = gateway ] && out="$out limit=$(pool_limit)"
  echo "$out"
  sleep "$PAUSE"
}

# field LINE KEY: the value of KEY=... in the generator's line.
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }

echo "backend: $WORKERS_BACKEND workers x ${SERVICE_MS} ms ±$(awk -v j="$JITTER" 'BEGIN{print j*100}')% (capacity $CAPACITY req/s); client timeout ${TIMEOUT}s; ${DURATION}s a run, the first ${WARMUP}s not counted"
# What the backend really serves on this machine, closed loop with all its workers busy and a
# queue (timer resolution and a shared CPU make it less than workers / service time): goodput
# is judged against it.
MEASURED=$($PIN_LOAD wrk -t 1 -c $((3 * WORKERS_BACKEND)) -d 5 "http://127.0.0.1:$BACKEND_PORT/" |
  awk '/Requests\/sec/ { printf "%d", $2 }')
sleep "$PAUSE"
echo "backend measured closed loop: $MEASURED req/s (wrk -c $((3 * WORKERS_BACKEND)))"
declare -A UNLOADED RESULT
# A first short run through each target warms its connections and the gateway's pool.
for t in $TARGETS; do
  line=$(DURATION=4 WARMUP=1 load "$t" 0.3 7)
  UNLOADED[$t]=$(field "$line" p99_ms)
done
for t in $TARGETS; do
  line=$(load "$t" 0.3 1)
  UNLOADED[$t]=$(field "$line" p99_ms)
done
seed=2
for level in $LEVELS; do
  for t in $TARGETS; do
    RESULT[$t@$level]=$(load "$t" "$level" $seed)
    seed=$((seed + 1))
  done
done

printf '\n| level | offered | target | goodput | of servable | rejected | timed out | p50 | p99 | p99 / unloaded | pool limit |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
met=yes
CHART=()
for level in $LEVELS; do
  for t in $TARGETS; do
    line=${RESULT[$t@$level]}
    rate=$(field "$line" rate)
    sent=$(field "$line" sent)
    goodput=$(field "$line" goodput)
    servable=$(awk -v r="$rate" -v c="$MEASURED" 'BEGIN { print (r < c ? r : c) }')
    share=$(awk -v g="$goodput" -v s="$servable" 'BEGIN { printf "%.0f", 100 * g / s }')
    rej=$(awk -v a="$(field "$line" rejected)" -v n="$sent" 'BEGIN { printf "%.1f", n ? 100 * a / n : 0 }')
    tmo=$(awk -v a="$(field "$line" timeouts)" -v b="$(field "$line" failed)" -v n="$sent" 'BEGIN { printf "%.1f", n ? 100 * (a + b) / n : 0 }')
    p50=$(field "$line" p50_ms)
    p99=$(field "$line" p99_ms)
    ratio=$(awk -v p="$p99" -v u="${UNLOADED[$t]}" 'BEGIN { printf "%.1f", (u > 0 ? p / u : 0) }')
    limit=$(field "$line" limit)
    printf '| %sx | %s/s | %s | %s/s | %s%% | %s%% | %s%% | %s ms | %s ms | %sx | %s |\n' \
      "$level" "$rate" "$t" "$goodput" "$share" "$rej" "$tmo" "$p50" "$p99" "$ratio" "${limit:--}"
    CHART+=("$t-${level}x $share p99 ${p99} ms (${ratio}x unloaded)")
    if [ "$t" = gateway ]; then
      awk -v s="$share" -v r="$ratio" 'BEGIN { exit !(s >= 95 && r <= 2) }' || met=no
    fi
  done
done
printf '\nunloaded p99 (0.3x):'
for t in $TARGETS; do printf ' %s %s ms;' "$t" "${UNLOADED[$t]}"; done
printf '\n'
case " $TARGETS " in
  *" gateway "*) echo "gateway: goodput >= 95% of servable and p99 <= 2x unloaded at every level: $met" ;;
esac

mkdir -p target/bench
printf '%s\n' "${CHART[@]}" | python3 gateway/benches/chart.py --no-ratio --unit "% of servable" \
  --title "Goodput under overload (open loop; backend ${WORKERS_BACKEND} workers x ${SERVICE_MS} ms ±$(awk -v j="$JITTER" 'BEGIN{print j*100}')%)" \
  --note "gateway/benches/overload.sh; levels ${LEVELS// /, } x capacity; client timeout ${TIMEOUT}s" \
  >target/bench/overload.svg
echo "chart: target/bench/overload.svg"
