#!/usr/bin/env bash
# What one refusal at the door costs the model server: the probe bundle served with a queue of
# one and no waiting (--max-queue-size 1 --queue-wait-ms 0), held full by three requests that
# sleep 30 s, then wrk (1 thread, 32 connections, 5 s) POSTs to /invocations: nearly every
# answer is a 503. Prints wrk's rate and the server's CPU seconds meanwhile (from /proc), so
# CPU per refusal = server CPU / requests. Needs wrk (`make bench` installs it).
#
#     bash bench/refusal_cost.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/.venv/bin/python"
WORK=$(mktemp -d)
trap 'kill "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$PY" -c "from pathlib import Path; from aiaas.bundle import build_bundle; build_bundle(Path('$ROOT/tests/projects/probe'), Path('$WORK/probe.tar.gz'))"
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
"$ROOT/.venv/bin/aiaas" serve "$WORK/probe.tar.gz" --port "$PORT" --max-queue-size 1 \
  --queue-wait-ms 0 --log-level warning >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 150); do curl -s -o /dev/null "http://127.0.0.1:$PORT/ping" && break; sleep 0.2; done
for _ in 1 2 3; do  # one running, one queued, one refused: the queue stays full for 30 s
  curl -s -m 40 -o /dev/null -H 'Content-Type: application/json' \
    -d '{"inputs": [{"value": 1, "sleep_ms": 30000}]}' "http://127.0.0.1:$PORT/invocations" &
  sleep 0.3
done
sleep 1
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"inputs": [{"value": 1}]}'
wrk.headers["Content-Type"] = "application/json"
LUA
ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
before=$(ticks)
out=$(wrk -t1 -c32 -d5s -s "$WORK/post.lua" "http://127.0.0.1:$PORT/invocations")
after=$(ticks)
echo "$out" | grep -E "requests in|Non-2xx|Requests/sec"
requests=$(echo "$out" | awk '/requests in/ {print $1}')
hz=$(getconf CLK_TCK)
"$PY" -c "cpu=($after-$before)/$hz; print(f'server CPU {cpu:.2f} s for {$requests} requests: {cpu/$requests*1e6:.0f} us each')"
