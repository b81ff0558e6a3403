#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: whatever else the machine is doing,
# the same build and requests give the same count to within 0.2 % for a server whose work stays
# on its worker thread (bare, actix-login, redis-get-worker), so two builds can be told apart by
# a few hundred instructions where benches/http.sh needs rounds of wrk to see a few percent,
# and only on a quiet machine. A server whose Redis connection is driven on another thread
# (redis-get) varies by up to a tenth from run to run, with how its threads happen to take
# turns: so the floor here is redis-get-worker, and redis-get only on a cluster, where the
# per-worker handler does not run. It counts user-space instructions of the whole server process (every thread); kernel
# time, cache misses and how long an instruction takes are not in it, so it says where work was
# added or removed, not how fast.
#
# Each variant of benches/http_server.rs runs under callgrind in turn, against one Redis server
# the script starts (or a three-primary cluster with CLUSTER=1). A session is logged in (and
# for ROUTE=/cart given a cart), REQUESTS/10 requests warm the server up, the counters are
# zeroed, then REQUESTS requests are sent over 8 keep-alive connections and the counters read.
#
# Usage, from the repository root:
#   bash benches/instructions.sh                   bare, the floor, actix-login, actix-login-cache,
#                                                  cache-floor (the cache's floor)
#   bash benches/instructions.sh actix-login       one variant
#   CLUSTER=1 bash benches/instructions.sh         on a three-primary cluster
#   ROUTE=/cart bash benches/instructions.sh actix-login actix-login-cache cache-floor
#   BIN=<an http_server executable> bash ...       another build (say, the one before a change)
#
# Each profile is kept (its path is printed): `callgrind_annotate --inclusive=yes <file>` shows
# where the instructions went. Under valgrind, sha2 cannot use the CPU's SHA extensions and
# falls back to its portable code, so a session lookup's SHA-256 counts about 3 500 instructions
# here against a few hundred on the machine itself.
# Knobs: ROUTE (/me), REQUESTS (3000), CLUSTER (0), BIN, PROFILE_TARGET_DIR
# (target/profile-bench, shared with profile.sh). Needs: cargo, valgrind (callgrind_control),
# redis-server, redis-cli, curl, python3.
set -euo pipefail
# form_cluster, for CLUSTER=1.
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

ROUTE=${ROUTE:-/me}
REQUESTS=${REQUESTS:-3000}
CLUSTER=${CLUSTER:-0}
TARGET_DIR=${PROFILE_TARGET_DIR:-target/profile-bench}
# The one-GET floor: a connection per worker, whose count repeats, except on a cluster.
FLOOR=redis-get-worker
[[ $CLUSTER == 1 ]] && FLOOR=redis-get
if (($# > 0)); then
    VARIANTS=("$@")
elif [[ $ROUTE == /cart ]]; then
    VARIANTS=(actix-login actix-login-cache cache-floor)
else
    VARIANTS=(bare "$FLOOR" actix-login actix-login-cache cache-floor)
fi

die() { echo "instructions.sh: $*" >&2; exit 1; }
for tool in cargo valgrind callgrind_control redis-server redis-cli curl python3; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

if [[ -z ${BIN:-} ]]; then
    build_log=$(mktemp)
    # Line tables, so that callgrind_annotate can name the source of what it counts.
    CARGO_TARGET_DIR=$TARGET_DIR CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
        RUSTFLAGS="-C force-frame-pointers=yes" \
        cargo bench -p actix-login-benches --no-run --bench http_server >"$build_log" 2>&1 ||
        { cat "$build_log" >&2; die "build failed"; }
    BIN=$(grep -o "$TARGET_DIR/release/deps/http_server-[0-9a-f]*" "$build_log" | tail -n 1) ||
        die "the build log names no http_server executable ($build_log)"
fi
[[ -x $BIN ]] || die "no http_server executable at '$BIN'"

WORK=$(mktemp -d -t actix-login-instructions.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS_PORTS=()
SERVER=
cleanup() {
    if [[ -n $SERVER ]]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
    for port in "${REDIS_PORTS[@]}"; do
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT

start_redis() {
    local port=$1 dir=$WORK/redis-$1
    shift
    mkdir -p "$dir"
    (cd "$dir" && redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --logfile "$dir/log" --daemonize yes "$@" >/dev/null)
    REDIS_PORTS+=("$port")
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.1; done
    die "redis-server on port $port did not answer"
}

if [[ $CLUSTER == 1 ]]; then
    # A cluster node also listens on its port + 10000: keep both under 65536.
    for _ in 1 2 3; do
        port=$(free_port)
        while ((port > 55000)); do port=$(free_port); done
        start_redis "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000
    done
    form_cluster
    unset REDIS_URL
else
    start_redis "$(free_port)"
    export REDIS_URL=redis://127.0.0.1:${REDIS_PORTS[0]}
fi

# $3 GETs of $2 on port $1 with cookie $4 (may be empty), over 8 keep-alive connections ($3 is
# a multiple of 8); fails on any answer but 200.
drive() {
    python3 - "$@" <<'PY'
import http.client, sys, threading
port, path, total, cookie = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
headers = {"cookie": cookie} if cookie else {}
failures = []
def run(count):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(count):
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(response.status)
threads = [threading.Thread(target=run, args=(total // 8,)) for _ in range(8)]
assert total % 8 == 0, total
for thread in threads: thread.start()
for thread in threads: thread.join()
if failures:
    sys.exit(f"{len(failures)} answers were not 200, the first {failures[0]}")
PY
}

# Whole rounds of the 8 connections.
REQUESTS=$((REQUESTS / 8 * 8))
WARM_UP=$((REQUESTS / 80 * 8))
((REQUESTS > 0)) || die "REQUESTS must be 8 or more"
# An older build (BIN=) may not know every variant: its usage lists those it does. Read whole:
# cut short by a pipe, its printing would fail and, with pipefail, end this script.
KNOWN=$("$BIN" 2>&1 || true)
MEASURED=()
for variant in "${VARIANTS[@]}"; do
    if [[ $KNOWN == *[\<\|]"$variant"[\|\>]* ]]; then
        MEASURED+=("$variant")
    else
        echo "instructions.sh: $BIN has no variant $variant; skipped" >&2
    fi
done
VARIANTS=("${MEASURED[@]}")
((${#VARIANTS[@]} > 0)) || die "$BIN knows none of the variants asked for"
declare -A PER_REQUEST
for variant in "${VARIANTS[@]}"; do
    port=$(free_port)
    out=$WORK/$variant.callgrind
    PORT=$port valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "$variant" \
        >"$WORK/$variant.log" 2>&1 &
    SERVER=$!
    up=0
    for _ in $(seq 600); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/me" && { up=1; break; }
        kill -0 "$SERVER" 2>/dev/null || die "$variant exited (see $WORK/$variant.log)"
        sleep 0.2
    done
    ((up)) || die "$variant did not answer within two minutes (see $WORK/$variant.log)"
    cookie=
    if [[ $variant == actix-login* || $variant == cache-floor ]]; then
        cookie=$(curl -sS --fail -D - -o /dev/null -X POST -H 'sec-fetch-site: same-origin' \
            "http://127.0.0.1:$port/login" |
            tr -d '\r' | awk 'tolower($1) == "set-cookie:" { sub(/^[^:]*: */, ""); sub(/;.*/, ""); print; exit }')
        [[ -n $cookie ]] || die "$variant: the login set no cookie"
        if [[ $ROUTE == /cart ]]; then
            curl -sS --fail -o /dev/null -X POST -H 'sec-fetch-site: same-origin' \
                -H "cookie: $cookie" "http://127.0.0.1:$port/cart"
        fi
    fi
    drive "$port" "$ROUTE" "$WARM_UP" "$cookie" || die "$variant: the warm-up failed"
    callgrind_control -z "$SERVER" >"$WORK/control.log" 2>&1 ||
        die "callgrind_control -z failed: $(cat "$WORK/control.log")"
    drive "$port" "$ROUTE" "$REQUESTS" "$cookie" || die "$variant: the measured requests failed"
    callgrind_control -d "$SERVER" >"$WORK/control.log" 2>&1 ||
        die "callgrind_control -d failed: $(cat "$WORK/control.log")"
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    # The dump after zeroing is part 1 of the profile; the file written at exit is not read.
    total=$(awk '/^summary:/ { print $2 }' "$out.1" 2>/dev/null)
    [[ -n $total ]] || die "$variant: no profile dumped at $out.1"
    PER_REQUEST[$variant]=$((total / REQUESTS))
done

echo "# instructions per request, GET $ROUTE, $REQUESTS requests after $WARM_UP to warm up"
echo "# $([[ $CLUSTER == 1 ]] && echo 'a 3-primary Redis Cluster' || echo 'one Redis server'); $BIN"
for variant in "${VARIANTS[@]}"; do
    line=$(printf '%-20s %8d' "$variant" "${PER_REQUEST[$variant]}")
    floors=(bare "$FLOOR")
    [[ $variant == actix-login* ]] && floors+=(cache-floor)
    for floor in "${floors[@]}"; do
        [[ -n ${PER_REQUEST[$floor]:-} && $floor != "$variant" ]] &&
            line+=$(printf '   %+7d vs %s' $((PER_REQUEST[$variant] - PER_REQUEST[$floor])) "$floor")
    done
    echo "$line"
done
echo "# profiles: $WORK/<variant>.callgrind.1"
