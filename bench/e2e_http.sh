#!/usr/bin/env bash
# End-to-end HTTP benchmark: nginx direct vs. nginx through a ringway tunnel, with wrk, in one
# run on this machine (as for every ringway figure: a ratio against a baseline started by the same
# script). Starts everything itself on loopback and cleans up.
#
#   bench/e2e_http.sh [--secs 10] [--workers N] [--out bench/results/DATE]
#
# Needs: nginx (Debian nginx-light), wrk, a release build (built here if missing).
# Last line: e2e_http rps_ratio=<tunnel/direct> bulk_ratio=<tunnel/direct>
set -euo pipefail

SECS=10
WORKERS=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$ROOT/bench/results/$(date -u +%Y-%m-%d)}"
mkdir -p "$OUT"
for tool in wrk /usr/sbin/nginx curl; do
  command -v "$tool" >/dev/null || { echo "e2e_http: $tool is missing (apt-get install -y wrk nginx-light curl)" >&2; exit 1; }
done
BIN="$ROOT/target/release/ringway"
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release -p control --bin ringway)
fi

WORK="$(mktemp -d /tmp/ringway-e2e-http.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # what, command...
  local what="$1"; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "e2e_http: $what did not come up" >&2; exit 1
}

# --- origin: nginx with a 12-byte file and a 1 MiB file ---
NGINX_PORT="$(free_port)"
mkdir -p "$WORK/www" "$WORK/nginx"
printf 'hello world\n' > "$WORK/www/small"
head -c 1048576 /dev/urandom > "$WORK/www/1m"
cat > "$WORK/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
error_log stderr error;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 1000000;
  sendfile on;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
  }
}
CONF
/usr/sbin/nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx.log" &
PIDS+=($!)
wait_for nginx curl -sf "http://127.0.0.1:$NGINX_PORT/small"

# --- control plane, tunnel, route ---
CP_PORT="$(free_port)"
export HOME="$WORK/home"
mkdir -p "$HOME"
"$BIN" control serve --data-dir "$WORK/cp" --listen "127.0.0.1:$CP_PORT" --zone bench.test >"$WORK/cp.log" 2>&1 &
PIDS+=($!)
wait_for "control plane" test -s "$WORK/cp/edge-token"
wait_for "control plane" curl -s "http://127.0.0.1:$CP_PORT/client/v4/zones"
"$BIN" tunnel login --control "http://127.0.0.1:$CP_PORT" --api-token "$(cat "$WORK/cp/admin-token")" --zone bench.test >/dev/null 2>&1
ID="$("$BIN" tunnel create bench 2>/dev/null | sed -n 's/.*with id \([0-9a-f-]*\).*/\1/p')"
"$BIN" tunnel route dns bench app.bench.test >/dev/null 2>&1

# --- edge and connector (release build) ---
"$BIN" edge run --control "http://127.0.0.1:$CP_PORT" --edge-token "$(cat "$WORK/cp/edge-token")" \
  --state-dir "$WORK/edge" --tunnel-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --workers "$WORKERS" --loglevel warn >"$WORK/edge.out" 2>"$WORK/edge.log" &
PIDS+=($!)
EDGE_PID=$!
wait_for edge grep -q 'edge ready' "$WORK/edge.out"
EDGE_HTTP="$(sed -n 's#^http listening on http://##p' "$WORK/edge.out")"
EDGE_UDP="$(sed -n 's#^tunnel listening on udp://##p' "$WORK/edge.out" | head -1)"
"$BIN" tunnel run --credentials-file "$HOME/.cloudflared/$ID.json" --url "http://127.0.0.1:$NGINX_PORT" \
  --edge "$EDGE_UDP" --cacert "$WORK/edge/ca.pem" --metrics 127.0.0.1:0 --workers "$WORKERS" \
  --loglevel warn "$ID" >"$WORK/conn.out" 2>"$WORK/conn.log" &
PIDS+=($!)
CONN_PID=$!
wait_for tunnel curl -sf -H 'Host: app.bench.test' "http://$EDGE_HTTP/small"

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
TICK="$(getconf CLK_TCK)"

# wrk_run NAME URL CONNS [HOST] -> prints "rps mbps p50 p99"
wrk_run() {
  local name="$1" url="$2" conns="$3" host="${4:-}"
  local hdr=()
  [ -n "$host" ] && hdr=(-H "Host: $host")
  local e0 c0
  e0="$(cpu_ticks "$EDGE_PID")"; c0="$(cpu_ticks "$CONN_PID")"
  wrk -t 2 -c "$conns" -d "${SECS}s" --latency "${hdr[@]}" "$url" >"$WORK/wrk-$name.txt" 2>&1
  local e1 c1
  e1="$(cpu_ticks "$EDGE_PID")"; c1="$(cpu_ticks "$CONN_PID")"
  local rps mb p50 p99 reqs
  rps="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$name.txt")"
  mb="$(awk '/Transfer\/sec/ {v=$2; if (v ~ /GB/) {sub("GB","",v); v*=1024} else if (v ~ /MB/) {sub("MB","",v)} else if (v ~ /KB/) {sub("KB","",v); v/=1024} else {v=v/1048576} print v}' "$WORK/wrk-$name.txt")"
  p50="$(awk '$1=="50%" {print $2}' "$WORK/wrk-$name.txt")"
  p99="$(awk '$1=="99%" {print $2}' "$WORK/wrk-$name.txt")"
  reqs="$(awk '/requests in/ {print $1}' "$WORK/wrk-$name.txt")"
  local ecpu ccpu
  ecpu="$(awk -v a="$e0" -v b="$e1" -v t="$TICK" 'BEGIN{print (b-a)/t}')"
  ccpu="$(awk -v a="$c0" -v b="$c1" -v t="$TICK" 'BEGIN{print (b-a)/t}')"
  echo "$rps $mb $p50 $p99 $reqs $ecpu $ccpu"
}

echo "warming up..." >&2
wrk -t 2 -c 32 -d 2s -H 'Host: app.bench.test' "http://$EDGE_HTTP/small" >/dev/null 2>&1

read -r D_RPS D_MB D_P50 D_P99 D_N _ _ <<<"$(wrk_run small-direct "http://127.0.0.1:$NGINX_PORT/small" 32)"
read -r T_RPS T_MB T_P50 T_P99 T_N T_ECPU T_CCPU <<<"$(wrk_run small-tunnel "http://$EDGE_HTTP/small" 32 app.bench.test)"
read -r DB_RPS DB_MB DB_P50 DB_P99 DB_N _ _ <<<"$(wrk_run bulk-direct "http://127.0.0.1:$NGINX_PORT/1m" 4)"
read -r TB_RPS TB_MB TB_P50 TB_P99 TB_N TB_ECPU TB_CCPU <<<"$(wrk_run bulk-tunnel "http://$EDGE_HTTP/1m" 4 app.bench.test)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.3f", a/b; else print "0" }'; }
RPS_RATIO="$(ratio "$T_RPS" "$D_RPS")"
BULK_RATIO="$(ratio "$TB_MB" "$DB_MB")"
us_per_req() { awk -v c="$1" -v n="$2" 'BEGIN{ if (n>0) printf "%.1f", c*1e6/n; else print "0" }'; }
ms_per_mib() { awk -v c="$1" -v mb="$2" -v s="$SECS" 'BEGIN{ if (mb>0) printf "%.2f", c*1e3/(mb*s); else print "0" }'; }

{
  echo "# e2e_http — $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, ${SECS}s per run, workers=${WORKERS} (0 = one per core)"
  echo
  echo "nginx origin; wrk -t2; edge, connector, nginx and wrk share this machine's cores."
  echo
  echo "| scenario | path | req/s | MB/s | p50 | p99 | edge CPU | connector CPU |"
  echo "|---|---|---|---|---|---|---|---|"
  echo "| 12-byte GET, 32 conns | direct | $D_RPS | $D_MB | $D_P50 | $D_P99 | | |"
  echo "| 12-byte GET, 32 conns | ringway | $T_RPS | $T_MB | $T_P50 | $T_P99 | $(us_per_req "$T_ECPU" "$T_N") µs/req | $(us_per_req "$T_CCPU" "$T_N") µs/req |"
  echo "| 1 MiB GET, 4 conns | direct | $DB_RPS | $DB_MB | $DB_P50 | $DB_P99 | | |"
  echo "| 1 MiB GET, 4 conns | ringway | $TB_RPS | $TB_MB | $TB_P50 | $TB_P99 | $(ms_per_mib "$TB_ECPU" "$TB_MB") ms/MiB | $(ms_per_mib "$TB_CCPU" "$TB_MB") ms/MiB |"
  echo
  echo "rps_ratio (tunnel/direct, small GET) = $RPS_RATIO; bulk_ratio (tunnel/direct, MB/s) = $BULK_RATIO"
} | tee "$OUT/e2e_http.md"
echo "e2e_http rps_ratio=$RPS_RATIO bulk_ratio=$BULK_RATIO"
