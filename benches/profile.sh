#!/usr/bin/env bash
# Where a server's CPU goes per request: one variant of benches/http_server.rs under wrk, with
# user and kernel CPU per request (from /proc), system calls and context switches per request
# (perf stat), and optionally a call-graph profile (perf record) whose heaviest frames it
# prints. benches/http.sh says how fast; this says where the microseconds go.
#
# Usage, from the repository root:
#   bash benches/profile.sh                        actix-login, GET /me
#   bash benches/profile.sh redis-get-worker       the one-GET floor, for comparison
#   ROUTE=/cart bash benches/profile.sh            the data read
#   PERF_RECORD=1 bash benches/profile.sh          also perf record -g; the report is in
#                                                  $WORK/perf.data (the path is printed)
#
# Variants are http_server's (bare, redis-get, redis-get-worker, redis-hmget-worker, identity,
# actix-login, actix-login-cache, ...). It builds the bench in a target directory of its own with
# frame pointers and line tables, so that perf can walk the stack; the numbers are for comparing
# variants measured one after the other on the same machine, not for the README's table.
# Knobs: ROUTE (/me), DURATION (s, 8), CONNECTIONS (32), THREADS (2), PROFILE_TARGET_DIR
# (target/profile-bench). Needs: cargo, redis-server, redis-cli, wrk, curl, perf, bc.
set -euo pipefail

VARIANT=${1:-actix-login}
ROUTE=${ROUTE:-/me}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
TARGET_DIR=${PROFILE_TARGET_DIR:-target/profile-bench}

die() { echo "profile.sh: $*" >&2; exit 1; }
for tool in cargo redis-server redis-cli wrk curl perf bc; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

build_log=$(mktemp)
CARGO_TARGET_DIR=$TARGET_DIR CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    RUSTFLAGS="-C force-frame-pointers=yes" \
    cargo bench -p actix-login-benches --no-run --bench http_server >"$build_log" 2>&1 ||
    { cat "$build_log" >&2; die "build failed"; }
BIN=$(grep -o "$TARGET_DIR/release/deps/http_server-[0-9a-f]*" "$build_log" | tail -n 1)
[[ -x $BIN ]] || BIN=$(ls -t "$TARGET_DIR"/release/deps/http_server-* | grep -v '\.d$' | head -n 1)

WORK=$(mktemp -d -t actix-login-profile.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$WORK/redis.log" --daemonize yes >/dev/null
cleanup() {
    [[ -n ${SERVER:-} ]] && kill "$SERVER" 2>/dev/null
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

REDIS_URL=redis://127.0.0.1:$REDIS_PORT PORT=$PORT "$BIN" "$VARIANT" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/me" && break
    kill -0 "$SERVER" 2>/dev/null || die "the server exited (see $WORK/server.log)"
    sleep 0.1
done

base=http://127.0.0.1:$PORT
cookie=$(curl -sS --fail -D - -o /dev/null -X POST -H 'sec-fetch-site: same-origin' "$base/login" |
    tr -d '\r' | awk 'tolower($1) == "set-cookie:" { sub(/^[^:]*: */, ""); sub(/;.*/, ""); print; exit }')
if [[ $ROUTE == /cart ]]; then
    curl -sS --fail -o /dev/null -X POST -H 'sec-fetch-site: same-origin' \
        -H "cookie: $cookie" "$base/cart"
fi
curl -sS --fail -o /dev/null -H "cookie: $cookie" "$base$ROUTE" || die "GET $ROUTE failed"

wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "cookie: $cookie" "$base$ROUTE" >/dev/null # warm-up

cpu() { awk '{ print $14, $15 }' "/proc/$SERVER/stat"; }
read -r user0 sys0 < <(cpu)
perf stat -e raw_syscalls:sys_enter,context-switches -p "$SERVER" -o "$WORK/stat.txt" \
    -- sleep "$DURATION" >/dev/null 2>&1 &
STAT=$!
if [[ ${PERF_RECORD:-0} == 1 ]]; then
    perf record -F 2999 -g -p "$SERVER" -o "$WORK/perf.data" -- sleep "$DURATION" \
        >/dev/null 2>&1 &
    RECORD=$!
fi
out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -H "cookie: $cookie" "$base$ROUTE")
wait "$STAT"
[[ -n ${RECORD:-} ]] && wait "$RECORD"
read -r user1 sys1 < <(cpu)

requests=$(awk '/requests in/ { print $1 }' <<<"$out")
rate=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
ticks=$(getconf CLK_TCK)
per_request() { echo "scale=2; $1 * 1000000 / $ticks / $requests" | bc; }
count() { awk -v what="$1" '$2 == what { gsub(",", "", $1); print $1 }' "$WORK/stat.txt"; }
echo "$VARIANT GET $ROUTE: $rate req/s"
echo "  server CPU per request: user $(per_request $((user1 - user0))) µs, kernel $(per_request $((sys1 - sys0))) µs"
echo "  per request: $(echo "scale=2; $(count raw_syscalls:sys_enter) / $requests" | bc) system calls, $(echo "scale=2; $(count context-switches) / $requests" | bc) context switches"
if [[ -n ${RECORD:-} ]]; then
    echo "  heaviest frames, inclusive (perf report -i $WORK/perf.data --children):"
    perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
        grep '%' | head -n 25 | cut -c1-150
fi
