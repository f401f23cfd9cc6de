# Shared by the proxy benchmarks (`proxy.sh`, `h2.sh`); sourced from the repository root after
# the script has set its own options. It pins the load generator and the servers, installs what
# is missing, builds the gateway, and gives the helpers below.
#
# In: LOADGEN_CPUS, SERVER_CPUS (optional). Out: PIN_LOAD, PIN_SERVER, BIN, TMP (removed at
# exit), PIDS (killed at exit, with the nginx master named by $TMP/nginx.pid), HZ.

if [ "$(nproc)" -ge 2 ]; then
  LOADGEN_CPUS=${LOADGEN_CPUS:-0}
  SERVER_CPUS=${SERVER_CPUS:-1-$(( $(nproc) - 1 ))}
  PIN_LOAD="taskset -c $LOADGEN_CPUS"
  PIN_SERVER="taskset -c $SERVER_CPUS"
else
  PIN_LOAD=""
  PIN_SERVER=""
fi

# need TOOL[:PACKAGE]...: installs the Debian packages of the tools that are missing.
need() {
  local missing=()
  for pair in "$@"; do
    local tool=${pair%%:*} pkg=${pair#*:}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  PATH=$PATH:/usr/sbin
}

cargo build --release --bin tollgate -q
BIN=$PWD/target/release/tollgate
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# haproxy_head: the start of a HAProxy config every bench shares (threads as workers, the
# open-file limit's connections, pid under $TMP, HTTP mode and its connect/client/server
# timeouts), up to inside its `defaults` section; the caller writes the rest.
haproxy_head() {
  cat <<EOF
global
  nbthread $WORKERS
  # Two descriptors a connection (client and server side), within the open-file limit.
  maxconn $(( $(ulimit -n) / 2 - 64 ))
  pidfile $TMP/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
EOF
}

# nginx_head: the start of an nginx config every bench shares (workers, files under $TMP, no
# access log, long keep-alive), up to inside its `http` block; the caller writes the rest.
nginx_head() {
  mkdir -p "$TMP/nginx"
  cat <<EOF
user root;
worker_processes $WORKERS;
worker_rlimit_nofile 200000;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 30000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx;
  proxy_temp_path $TMP/nginx;
  fastcgi_temp_path $TMP/nginx;
  uwsgi_temp_path $TMP/nginx;
  scgi_temp_path $TMP/nginx;
  keepalive_requests 1000000;
EOF
}

# wait_port PORT: until something accepts connections on it (10 s at most).
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

# ticks PID...: CPU clock ticks (user + system) of the processes and their children (nginx
# workers).
ticks() {
  local total=0
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') ))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# The targets in the order round $1 runs them (the rest of the arguments): as given in odd
# rounds, reversed in even ones, so that a target's place in the round alternates (on the
# 2-core machine, in one sitting, a build run second in every round gained about 4% over the
# same build run first).
round_order() {
  local r=$1
  shift
  if (( r % 2 )); then
    echo "$@"
  else
    local out=() i
    for (( i = $#; i >= 1; i-- )); do out+=("${!i}"); done
    echo "${out[@]}"
  fi
}

# median: the median of the numbers on standard input, one a line.
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# stack_cluster NAME MIN_LIMIT: a gateway cluster NAME with the layered stack (balance,
# breaker, pool) over the backend on $BACKEND_PORT, the pool's floor at MIN_LIMIT.
stack_cluster() {
  cat <<EOF
[[clusters]]
name = "$1"
endpoints = ["127.0.0.1:$BACKEND_PORT"]
[clusters.balance]
[clusters.breaker]
[clusters.pool]
initial_limit = 1000
min_limit = $2
max_limit = 100000
EOF
}
