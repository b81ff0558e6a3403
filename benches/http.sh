#!/usr/bin/env bash
# Side-by-side HTTP benchmark of one authenticated route, `GET /me`, on nine servers:
#
#   bare            Actix Web without middleware (the ceiling)
#   redis-get       one Redis GET of a fixed key per request (the one-round-trip floor), through a
#                   connection made before the server starts, as most apps do: its commands hop
#                   to the main thread, which drives that connection, and back
#   redis-get-worker  the same through a connection per worker, opened on the worker's own
#                   runtime (no hop; the stricter floor, as actix-login's store does)
#   redis-hmget-worker  the same with the reply actix-login's lookup gets: HMGET of four fields
#                   of a session-shaped hash, four values where GET answers one (what the
#                   reply's shape costs, apart from everything else actix-login does)
#   identity        actix-session RedisSessionStore + actix-identity, as their docs set them up
#   identity-visit  the same with visit_deadline (sliding expiry: a session write per request)
#   actix-login     LoginMiddleware + RedisStore, AuthUser<Profile>
#   actix-login-cache  the same with RedisStoreBuilder::local_cache (CLIENT TRACKING)
#   cache-floor     what an exact in-process cache hit needs at the least, in the handler: the
#                   cookie, its SHA-256, a map lookup under a lock, the deadline, the lease and a
#                   non-blocking peek of a Redis socket (the check that no invalidation waits),
#                   the profile's JSON decoded (actix-login-cache's floor, as redis-get-worker is
#                   actix-login's; on a cluster, one node's: it peeks the first seed node)
#
# Four of them also serve GET /cart, "an authenticated request that reads one data key": the
# login check plus a cart (three item ids) read from the session's data, written once before
# measuring with POST /cart into a second session of the same user:
#
#   identity/cart           Identity + actix_session::Session::get, from the session state
#                           actix-session loads anyway (one GET)
#   actix-login/cart        AuthUser<Profile> + Session::get: record and data in one HMGET
#   actix-login-cache/cart  the same with the local cache: record and data from memory
#   cache-floor/cart        the cache floor's hit, and the cart's JSON kept beside the profile
#
# Each table row gives the median req/s over rounds and the medians of same-round ratios: this
# target's req/s over the incumbent's (identity for GET /me, identity/cart for GET /cart), over
# redis-get's and over bare's GET /me in the same round; then server CPU per request (µs, and
# above redis-get's), and Redis commands per request of each kind, as Redis counts them
# (INFO commandstats).
#
# With CLUSTER=1 everything runs on a three-primary Redis Cluster the script starts instead of
# one server. actix-session 0.11's RedisSessionStore connects to one server only (a
# ConnectionManager or a deadpool-redis pool), so the identity variants refuse to start and the
# actix-login variants are compared with bare and redis-get (a GET through a cluster
# connection) only; the per-worker floors, written for one server, refuse too, and every variant
# that refuses is skipped with the reason it printed.
#
# All nine come from one bench target (benches/http_server.rs, in the actix-login-benches package
# of the workspace), each in its own process with one
# Actix worker, all sharing a redis-server this script starts on a free port. Each server gets a
# session once (POST /login), then wrk hits GET /me with that cookie, and GET /cart with the
# cart's, in interleaved rounds over every (server, route) target, so slow drifts of a shared
# machine spread over every target instead of landing on one.
#
# Then a login storm on actix-login alone: GET /me at a steady pace (a few connections, each
# pausing between requests, so both phases offer about the same rate), quiet, and again while a
# second wrk posts password logins (POST /login-password: argon2id on its own low-priority threads,
# then a session write) as fast as the server takes them. Quiet and storm phases alternate. It
# prints /me req/s, p50 and p99 in both phases, logins/s, server CPU, and storm p99 / quiet p99
# (the target is within 2x; measured, not asserted). wrk has no fixed-rate mode and wrk2 is not
# packaged by Debian, hence the pauses; wrk still times each request from when it is sent, so a
# stall delays the requests queued behind it without showing in their latency.
#
# Usage, from the repository root:
#   bash benches/http.sh            3 rounds x 10 s per target, then 3 quiet + 3 storm phases of
#                                   10 s (about 7 minutes)
#   bash benches/http.sh --smoke    1 round x 1 s per target and one 1 s phase of each kind, for
#                                   CI: checks that everything builds, starts and answers 200,
#                                   and nothing about speed
#   CLUSTER=1 bash benches/http.sh  the same on a 3-primary Redis Cluster (--smoke works too)
# Needs: cargo, redis-server + redis-cli (7.0 or newer), wrk, curl.
# BEFORE_BIN=<an older build of the http_server bench executable> adds its actix-login variant
# as actix-login-before (GET /me and GET /cart), for a before/after comparison within one run; on
# one server it uses database 1, so that builds with different key layouts do not clash.
#
# WORKERS=2 gives every server two Actix workers instead of one (on two cores, Actix's default
# of a worker per core), passed on to the servers (an older BEFORE_BIN may ignore it).
#
# Knobs (environment): CLUSTER (0), WORKERS (1), BEFORE_BIN, ROUNDS, DURATION (s), WARMUP (s), THREADS, CONNECTIONS; for the storm
# STORM=0 (skip it), STORM_ROUNDS, STORM_DURATION (s), STORM_ME_CONNECTIONS (4),
# STORM_ME_PAUSE_MS (2, per connection between requests), STORM_LOGIN_CONNECTIONS (8).
#
# Nothing is pinned with taskset. On the 2-core machine this was written on, pinning the server
# to one core and Redis + wrk to the other, or server + Redis to one and wrk to the other, gave
# 5-15 % fewer req/s than leaving placement to the scheduler, and no steadier numbers.
set -euo pipefail
# form_cluster, for CLUSTER=1.
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h | --help) awk 'NR > 1 { if (!/^#/) exit; sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [[ $SMOKE == 1 ]]; then
    ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-1} WARMUP=${WARMUP:-0}
else
    ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2}
fi
CLUSTER=${CLUSTER:-0}
export WORKERS=${WORKERS:-1}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
STORM=${STORM:-1}
STORM_ROUNDS=${STORM_ROUNDS:-$ROUNDS}
STORM_DURATION=${STORM_DURATION:-$DURATION}
STORM_ME_CONNECTIONS=${STORM_ME_CONNECTIONS:-4}
STORM_ME_PAUSE_MS=${STORM_ME_PAUSE_MS:-2}
STORM_LOGIN_CONNECTIONS=${STORM_LOGIN_CONNECTIONS:-8}
# The one account of actix-login's POST /login-password (benches/http_server.rs).
STORM_FORM='username=storm&password=correct+horse+battery+staple'
SERVERS=(bare redis-get redis-get-worker redis-hmget-worker identity identity-visit actix-login actix-login-cache cache-floor)
# Servers whose /me must refuse a request without a cookie.
AUTHENTICATED=(identity identity-visit actix-login actix-login-cache cache-floor)
EXPECTED_BODY='{"id":1,"username":"alice"}'
# Servers that also serve the cart (POST /cart, GET /cart), and what GET /cart answers.
CART_SERVERS=(identity actix-login actix-login-cache cache-floor)
EXPECTED_CART='["sku-1041","sku-2203","sku-3307"]'
# Which executable and variant each server runs: this build's, of its own name, unless set here.
declare -A BIN_OF VARIANT_OF
if [[ -n ${BEFORE_BIN:-} ]]; then
    [[ -x $BEFORE_BIN ]] || { echo "http.sh: BEFORE_BIN=$BEFORE_BIN is not an executable" >&2; exit 2; }
    SERVERS+=(actix-login-before)
    AUTHENTICATED+=(actix-login-before)
    CART_SERVERS+=(actix-login-before)
    BIN_OF[actix-login-before]=$BEFORE_BIN
    VARIANT_OF[actix-login-before]=actix-login
fi
# What wrk measures: "server" is GET /me on that server, "server/cart" GET /cart.
TARGETS=("${SERVERS[@]}" "${CART_SERVERS[@]/%//cart}")

die() { echo "http.sh: $*" >&2; exit 1; }

for tool in cargo redis-server redis-cli wrk curl getconf; do
    command -v "$tool" >/dev/null || die "$tool not found (wrk: apt-get install -y wrk)"
done
[[ -f Cargo.toml && -f benches/http_server.rs ]] || die "run me from the repository root"

START_SECONDS=$SECONDS
WORK=$(mktemp -d -t actix-login-bench.XXXXXX)
REDIS_PIDS=()
REDIS_PORTS=()
STORM_PID=""
declare -A PID PORT COOKIE SERVER_OF PATH_OF
for target in "${TARGETS[@]}"; do
    SERVER_OF[$target]=${target%%/*}
    PATH_OF[$target]=/me
    [[ $target == */* ]] && PATH_OF[$target]=/${target#*/}
done

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in $STORM_PID "${PID[@]}" "${REDIS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $STORM_PID "${PID[@]}" "${REDIS_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status != 0 ]]; then
        echo "http.sh: failed (exit $status); logs were in $WORK:" >&2
        local log
        for log in "$WORK"/*.log; do
            [[ -s $log ]] || continue
            echo "--- $(basename "$log") (last 20 lines)" >&2
            tail -n 20 "$log" >&2
        done
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers ------------------------------------------------------------------------------------

# A TCP port nobody listens on, below the usual ephemeral range (32768+) that wrk's and Redis
# clients' own sockets come from, and not one already handed out by this script.
declare -A TAKEN
free_port() {
    local port attempt
    for attempt in $(seq 1 200); do
        port=$((20000 + RANDOM % 12000))
        [[ -n ${TAKEN[$port]:-} ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            TAKEN[$port]=1
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

# A port for a cluster node: it and its cluster bus port (10000 above) both free, both below the
# ephemeral range.
free_cluster_port() {
    local port attempt
    for attempt in $(seq 1 200); do
        port=$((20000 + RANDOM % 2700))
        [[ -n ${TAKEN[$port]:-} || -n ${TAKEN[$((port + 10000))]:-} ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then
            TAKEN[$port]=1
            TAKEN[$((port + 10000))]=1
            echo "$port"
            return
        fi
    done
    die "no free port pair found for a cluster node"
}

# utime + stime of a whole process (all threads), in clock ticks. The command name sits in
# parentheses and may contain spaces, so count fields after the last ')'.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat") || die "process $1 is gone"
    stat=${stat##*) }
    # After "pid (comm) " the fields are: state(3) ... utime(14) stime(15).
    awk '{ print $12 + $13 }' <<<"$stat"
}

# CPU ticks of every Redis server together.
redis_ticks() {
    local pid total=0
    for pid in "${REDIS_PIDS[@]}"; do
        total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}

# "command calls" for every Redis command run so far, summed over the nodes, except INFO (this
# script's own probe). On a cluster, the clients' topology checks (CLUSTER) count too.
redis_calls() {
    local port
    for port in "${REDIS_PORTS[@]}"; do
        redis-cli -p "$port" INFO commandstats | tr -d '\r'
    done | awk -F'[:=,]' '/^cmdstat_/ { sub(/^cmdstat_/, "", $1); if ($1 != "info") n[$1] += $3 }
        END { for (c in n) print c, n[c] }' | sort
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print v[int((NR + 1) / 2)] }'; }

# The first Set-Cookie of a response (headers on stdin), as "name=value".
set_cookie() {
    tr -d '\r' | awk 'tolower($1) == "set-cookie:" { sub(/^[^:]*: */, ""); sub(/;.*/, ""); print; exit }'
}

# A new session on a server (POST /login); prints its cookie. Sec-Fetch-Site is what a browser
# sends for a same-origin form or fetch.
login() { # name
    local cookie
    cookie=$(curl -sS --fail -D - -o /dev/null -X POST -H 'sec-fetch-site: same-origin' \
        "http://127.0.0.1:${PORT[$1]}/login" | set_cookie)
    [[ -n $cookie ]] || die "$1: POST /login set no cookie"
    echo "$cookie"
}

# Returns 0 once the server answers, 1 if it exited refusing the deployment (its log then has a
# "variant refused:" line); dies on anything else.
wait_ready() { # name port pid log
    local tries
    for tries in $(seq 1 100); do
        if ! kill -0 "$3" 2>/dev/null; then
            wait "$3" 2>/dev/null || true
            grep -q 'variant refused:' "$4" && return 1
            die "$1 exited during startup (see $4)"
        fi
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$2/me" && return 0
        sleep 0.1
    done
    die "$1 did not answer on port $2 within 10 s"
}

# Whether $1 is among the remaining arguments.
among() { # word words...
    local word=$1 each
    shift
    for each in "$@"; do
        [[ $each == "$word" ]] && return 0
    done
    return 1
}

# ---- build --------------------------------------------------------------------------------------

echo "building the bench target (release)..." >&2
BIN=$(cargo bench -p actix-login-benches --no-run --bench http_server \
    --message-format=json-render-diagnostics |
    grep -o '"executable":"[^"]*http_server-[^"]*"' | tail -n 1 | sed 's/^"executable":"//; s/"$//')
[[ -n $BIN && -x $BIN ]] || die "could not find the http_server bench executable"

# ---- redis --------------------------------------------------------------------------------------

start_redis() { # port extra-args... -> appends to REDIS_PIDS and REDIS_PORTS
    local port=$1
    shift
    mkdir -p "$WORK/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$WORK/redis-$port" --logfile "$WORK/redis-$port.log" "$@" &
    REDIS_PIDS+=($!)
    REDIS_PORTS+=("$port")
    for _ in $(seq 1 50); do
        redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && return
        kill -0 "${REDIS_PIDS[-1]}" 2>/dev/null || die "redis-server exited (see $WORK/redis-$port.log)"
        sleep 0.1
    done
    die "redis-server on port $port did not answer"
}

if [[ $CLUSTER == 1 ]]; then
    # Three primaries, no replicas, as tests/it/support/cluster.rs starts them.
    for _ in 1 2 3; do
        start_redis "$(free_cluster_port)" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000
    done
    form_cluster
    DEPLOYMENT="a 3-primary Redis Cluster (ports ${REDIS_PORTS[*]})"
else
    start_redis "$(free_port)"
    export REDIS_URL="redis://127.0.0.1:${REDIS_PORTS[0]}"
    DEPLOYMENT="one Redis server"
fi

# ---- servers and sessions -----------------------------------------------------------------------

# An older build may keep its keys in another layout, and may remove records it cannot read:
# on one server it gets database 1 of its own; on a cluster (database 0 only) this build's
# servers keep their keys under a prefix of their own instead (an older build ignores
# KEY_PREFIX and keeps the store's default).
declare -A URL_OF
[[ $CLUSTER == 1 ]] || URL_OF[actix-login-before]="$REDIS_URL/1"
OWN_PREFIX=
[[ $CLUSTER == 1 && -n ${BEFORE_BIN:-} ]] && OWN_PREFIX=bench-current
for name in "${SERVERS[@]}"; do
    PORT[$name]=$(free_port)
    prefix=$OWN_PREFIX
    [[ $name == actix-login-before ]] && prefix=
    # `env` (which execs the server, keeping the PID) so that the prefix can be left out.
    env REDIS_URL="${URL_OF[$name]:-${REDIS_URL:-}}" PORT="${PORT[$name]}" ${prefix:+KEY_PREFIX=$prefix} \
        "${BIN_OF[$name]:-$BIN}" "${VARIANT_OF[$name]:-$name}" >"$WORK/$name.log" 2>&1 &
    PID[$name]=$!
done
# A variant that refuses the deployment is left out, with its reason in the report.
SKIPPED=()
RUNNING=()
for name in "${SERVERS[@]}"; do
    if ! wait_ready "$name" "${PORT[$name]}" "${PID[$name]}" "$WORK/$name.log"; then
        SKIPPED+=("$name: $(grep -m1 -o 'variant refused: .*' "$WORK/$name.log")")
        echo "http.sh: skipping ${SKIPPED[-1]}" >&2
        unset "PID[$name]"
        continue
    fi
    RUNNING+=("$name")
done
for name in bare redis-get actix-login; do
    among "$name" "${RUNNING[@]}" || die "$name must run: $(cat "$WORK/$name.log")"
done
keep_running() { local name; for name in "$@"; do among "$name" "${RUNNING[@]}" && echo "$name"; done; }
mapfile -t SERVERS < <(keep_running "${SERVERS[@]}")
mapfile -t AUTHENTICATED < <(keep_running "${AUTHENTICATED[@]}")
mapfile -t CART_SERVERS < <(keep_running "${CART_SERVERS[@]}")
TARGETS=("${SERVERS[@]}" "${CART_SERVERS[@]/%//cart}")
for name in "${SERVERS[@]}"; do
    COOKIE[$name]=$(login "$name")
    body=$(curl -sS --fail -H "cookie: ${COOKIE[$name]}" "http://127.0.0.1:${PORT[$name]}/me") ||
        die "$name: GET /me with the cookie failed"
    [[ $body == "$EXPECTED_BODY" ]] || die "$name: GET /me answered $body"
done
# The cart lives in a session of its own (the same user), so that /me keeps measuring a session
# without data: actix-session loads the whole state on every request, a cart included.
for name in "${CART_SERVERS[@]}"; do
    base="http://127.0.0.1:${PORT[$name]}"
    cookie=$(login "$name")
    curl -sS --fail -D "$WORK/cart.headers" -o "$WORK/cart.body" -X POST \
        -H 'sec-fetch-site: same-origin' -H "cookie: $cookie" "$base/cart" ||
        die "$name: POST /cart failed"
    [[ $(<"$WORK/cart.body") == "$EXPECTED_CART" ]] || die "$name: POST /cart answered $(<"$WORK/cart.body")"
    # actix-session sends its cookie again after a change: the same session, sealed anew.
    fresh=$(set_cookie <"$WORK/cart.headers")
    COOKIE[$name/cart]=${fresh:-$cookie}
    body=$(curl -sS --fail -H "cookie: ${COOKIE[$name/cart]}" "$base/cart") ||
        die "$name: GET /cart with the cookie failed"
    [[ $body == "$EXPECTED_CART" ]] || die "$name: GET /cart answered $body"
done
for name in "${AUTHENTICATED[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/me")
    [[ $code == 401 ]] || die "$name: GET /me without a cookie answered $code, not 401"
done
for name in "${CART_SERVERS[@]}"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/cart")
    [[ $code == 401 ]] || die "$name: GET /cart without a cookie answered $code, not 401"
done

# ---- measurement --------------------------------------------------------------------------------

cat >"$WORK/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %d %d %d %.0f %.0f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
LUA

run_wrk() { # target seconds -> WRKRESULT fields
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${2}s" --latency -s "$WORK/report.lua" -H "cookie: ${COOKIE[$1]}" \
        "http://127.0.0.1:${PORT[${SERVER_OF[$1]}]}${PATH_OF[$1]}" >"$WORK/wrk-last.out" 2>&1 ||
        die "$1: wrk failed: $(cat "$WORK/wrk-last.out")"
    grep '^WRKRESULT ' "$WORK/wrk-last.out" || die "$1: no result from wrk"
}

CLK_TCK=$(getconf CLK_TCK)
declare -A RPS RPS_AT P50 P99 REQS SRV_TICKS REDIS_TICKS CMDS
for name in "${TARGETS[@]}"; do
    RPS[$name]="" P50[$name]="" P99[$name]="" REQS[$name]=0 SRV_TICKS[$name]=0 REDIS_TICKS[$name]=0
done

echo "# actix-login HTTP benchmark: GET /me and GET /cart with a live session"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- machine: $(nproc) CPUs, $(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//'), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "- tools: $(rustc --version), $(redis-server --version | grep -o 'v=[^ ]*' | sed 's/v=/redis /'), $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
echo "- Redis: $DEPLOYMENT"
for skipped in "${SKIPPED[@]}"; do
    echo "- not run: $skipped"
done
echo "- load: wrk -t$THREADS -c$CONNECTIONS, $ROUNDS interleaved round(s) x ${DURATION} s per target (after ${WARMUP} s warm-up each), $WORKERS Actix worker(s) per server, no CPU pinning$([[ $SMOKE == 1 ]] && echo ', SMOKE RUN: numbers mean nothing')"
echo

if [[ $WARMUP != 0 ]]; then
    for name in "${TARGETS[@]}"; do
        run_wrk "$name" "$WARMUP" >/dev/null
    done
fi

for round in $(seq 1 "$ROUNDS"); do
    # Each round starts one target later, so no target always follows the same neighbour.
    for i in "${!TARGETS[@]}"; do
        name=${TARGETS[$(((i + round - 1) % ${#TARGETS[@]}))]}
        redis_calls >"$WORK/calls.before"
        srv0=$(cpu_ticks "${PID[${SERVER_OF[$name]}]}")
        red0=$(redis_ticks)
        read -r _ reqs micros e_connect e_read e_write e_status e_timeout p50 p99 < <(run_wrk "$name" "$DURATION")
        srv1=$(cpu_ticks "${PID[${SERVER_OF[$name]}]}")
        red1=$(redis_ticks)
        redis_calls >"$WORK/calls.after"

        errors=$((e_connect + e_read + e_write + e_status + e_timeout))
        ((errors == 0)) || die "$name: wrk saw errors (connect $e_connect, read $e_read, write $e_write, non-2xx $e_status, timeout $e_timeout)"
        ((reqs > 0)) || die "$name: no requests completed"
        rps=$(awk -v r="$reqs" -v us="$micros" 'BEGIN { printf "%.0f", r / (us / 1e6) }')
        RPS[$name]+="$rps "
        RPS_AT[$name:$round]=$rps
        P50[$name]+="$p50 "
        P99[$name]+="$p99 "
        REQS[$name]=$((REQS[$name] + reqs))
        SRV_TICKS[$name]=$((SRV_TICKS[$name] + srv1 - srv0))
        REDIS_TICKS[$name]=$((REDIS_TICKS[$name] + red1 - red0))
        while read -r cmd calls; do
            CMDS[$name:$cmd]=$((${CMDS[$name:$cmd]:-0} + calls))
        done < <(join -a 2 -e 0 -o 0,1.2,2.2 "$WORK/calls.before" "$WORK/calls.after" |
            awk '$3 - $2 > 0 { print $1, $3 - $2 }')
        printf 'round %d/%d  %-22s %8s req/s  p50 %6s us  p99 %6s us\n' \
            "$round" "$ROUNDS" "$name" "$rps" "$p50" "$p99" >&2
    done
done

# ---- report -------------------------------------------------------------------------------------

median_of() { tr ' ' '\n' <<<"$1" | awk NF | median; }
rps_of() { median_of "${RPS[$1]}"; }

# The median over rounds of target $1's req/s over target $2's in the same round; "-" without $2.
ratio_of() { # target baseline
    local round ratios=""
    [[ -n $2 && -n ${RPS[$2]:-} ]] || { echo "-"; return; }
    for round in $(seq 1 "$ROUNDS"); do
        ratios+="$(awk -v a="${RPS_AT[$1:$round]}" -v b="${RPS_AT[$2:$round]}" 'BEGIN { printf "%.4f", a / b }') "
    done
    median_of "$ratios" | awk '{ printf "%.2f", $1 }'
}

cpu_of() { awk -v t="${SRV_TICKS[$1]}" -v hz="$CLK_TCK" -v r="${REQS[$1]}" 'BEGIN { printf "%.1f", t * 1e6 / hz / r }'; }

# Redis commands per request of each kind, as "HMGET 1.00, EVALSHA 0.01", and their total.
command_mix() { # target
    local key total=0 mix=""
    for key in "${!CMDS[@]}"; do
        [[ $key == "$1:"* ]] || continue
        total=$((total + CMDS[$key]))
        mix+="$(awk -v c="${CMDS[$key]}" -v r="${REQS[$1]}" -v k="${key#*:}" 'BEGIN { printf "%s %.2f", toupper(k), c / r }'), "
    done
    mix=$(tr ',' '\n' <<<"${mix%, }" | sed 's/^ *//' | awk NF | sort | paste -sd, - | sed 's/,/, /g')
    awk -v c="$total" -v r="${REQS[$1]}" -v mix="${mix:-none}" 'BEGIN { printf "%.2f | %s", c / r, mix }'
}

table_head() {
    echo "| server | req/s (median) | req/s per round | vs incumbent | vs one-GET | vs bare | p50 µs | p99 µs | server CPU µs/req | CPU above one-GET µs/req | Redis CPU µs/req | Redis cmds/req | commands per request |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
}

table_row() { # target incumbent
    local name=$1 rounds
    rounds=${RPS[$name]% }
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${SERVER_OF[$name]}" \
        "$(rps_of "$name")" "${rounds// / / }" "$(ratio_of "$name" "$2")" "$(ratio_of "$name" redis-get)" \
        "$(ratio_of "$name" bare)" "$(median_of "${P50[$name]}")" "$(median_of "${P99[$name]}")" \
        "$(cpu_of "$name")" "$(awk -v a="$(cpu_of "$name")" -v b="$(cpu_of redis-get)" 'BEGIN { printf "%+.1f", a - b }')" \
        "$(awk -v t="${REDIS_TICKS[$name]}" -v hz="$CLK_TCK" -v r="${REQS[$name]}" 'BEGIN { printf "%.1f", t * 1e6 / hz / r }')" \
        "$(command_mix "$name")"
}

INCUMBENT_ME=$(among identity "${SERVERS[@]}" && echo identity || true)
INCUMBENT_CART=$(among identity "${CART_SERVERS[@]}" && echo identity/cart || true)
echo "## GET /me (the profile of a logged-in user, no session data)"
echo
table_head
for name in "${SERVERS[@]}"; do
    table_row "$name" "$INCUMBENT_ME"
done
echo
echo "## GET /cart (logged in, and one session-data key: a cart of three item ids)"
echo
echo "In a session of its own. \"vs one-GET\" and \"vs bare\" are against GET /me on redis-get and"
echo "bare in the same round: they have no sessions, so one GET (or nothing) is the floor here too."
echo
table_head
for name in "${CART_SERVERS[@]}"; do
    table_row "$name/cart" "$INCUMBENT_CART"
done
echo
echo "req/s, p50 and p99 are medians over rounds; \"vs\" columns are medians over rounds of this"
echo "target's req/s divided by the other's in the same round; the incumbent is identity (actix-session"
echo "+ actix-identity) on the same route. CPU and Redis commands are totals over all rounds divided"
echo "by all requests (CPU from /proc/<pid>/stat utime+stime, ${CLK_TCK} ticks/s, so about 1 µs/req of"
echo "resolution at these rates; Redis commands from INFO commandstats, INFO itself excluded, which"
echo "also counts the commands a script runs, such as the idle-deadline refresh's HEXISTS and HSET;"
echo "tests/it/fast_path.rs counts round trips with MONITOR). Server"
echo "CPU covers the whole server process; wrk and Redis share the same $(nproc) cores, so req/s is a"
echo "relative figure."
echo
# The targets of issue 21, for the variants that ran.
target_line() { # label value goal(>=)
    awk -v l="$1" -v v="$2" -v g="$3" 'BEGIN {
        if (v == "-") { printf "- %s: not measured (no such variant here)\n", l; exit }
        printf "- %s: %s (target >= %s: %s)\n", l, v, g, v + 0 >= g ? "met" : "NOT met" }'
}
echo "Targets:"
target_line "actix-login GET /me vs incumbent" "$(ratio_of actix-login "$INCUMBENT_ME")" 1.05
target_line "actix-login GET /me vs one-GET" "$(ratio_of actix-login redis-get)" 0.95
awk -v a="$(cpu_of actix-login)" -v b="$(cpu_of redis-get)" 'BEGIN {
    printf "- actix-login GET /me server CPU above one-GET: %+.1f µs/req (target <= 2: %s)\n", a - b, a - b <= 2 ? "met" : "NOT met" }'
if among redis-get-worker "${SERVERS[@]}"; then
    target_line "actix-login GET /me vs one-GET per worker" "$(ratio_of actix-login redis-get-worker)" 0.95
    awk -v a="$(cpu_of actix-login)" -v b="$(cpu_of redis-get-worker)" 'BEGIN {
        printf "- actix-login GET /me server CPU above one-GET per worker: %+.1f µs/req (target <= 2: %s)\n", a - b, a - b <= 2 ? "met" : "NOT met" }'
fi
if among redis-hmget-worker "${SERVERS[@]}"; then
    # Not a target: how much of the gap to the one-GET floors is the reply's shape.
    awk -v r="$(ratio_of actix-login redis-hmget-worker)" -v f="$(ratio_of redis-hmget-worker redis-get-worker)" \
        -v a="$(cpu_of actix-login)" -v b="$(cpu_of redis-hmget-worker)" 'BEGIN {
        printf "- one-HMGET per worker vs one-GET per worker: %s (the reply actix-login gets, four values not one; no target)\n", f
        printf "- actix-login GET /me vs one-HMGET per worker: %s, server CPU %+.1f µs/req (no target)\n", r, a - b }'
fi
if among actix-login-cache "${SERVERS[@]}"; then
    target_line "actix-login-cache GET /me vs bare" "$(ratio_of actix-login-cache bare)" 0.9
    target_line "actix-login-cache GET /cart vs bare" "$(ratio_of actix-login-cache/cart bare)" 0.85
fi
if among cache-floor "${SERVERS[@]}" && among actix-login-cache "${SERVERS[@]}"; then
    # Not a target: how far an exact cache hit can get at all, and how far actix-login's is from it.
    for route in "" /cart; do
        awk -v route="${route:-/me}" -v f="$(ratio_of "cache-floor$route" bare)" \
            -v r="$(ratio_of "actix-login-cache$route" "cache-floor$route")" \
            -v a="$(cpu_of "actix-login-cache$route")" -v b="$(cpu_of "cache-floor$route")" \
            -v z="$(cpu_of bare)" 'BEGIN {
            printf "- cache floor GET %s vs bare: %s, server CPU %+.1f µs/req (an exact cache hit at the least; no target)\n", route, f, b - z
            printf "- actix-login-cache GET %s vs cache floor: %s, server CPU %+.1f µs/req (no target)\n", route, r, a - b }'
    done
fi
target_line "actix-login GET /cart vs incumbent" "$(ratio_of actix-login/cart "$INCUMBENT_CART")" 1.05

# ---- Redis memory per session -------------------------------------------------------------------

# Logins as a browser makes them (a typical 97-character User-Agent), then MEMORY USAGE of every
# session record plus the user's index, divided by the sessions.
MEM_SESSIONS=$([[ $SMOKE == 1 ]] && echo 5 || echo 50)
MEM_UA='Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36'
# The actix-login servers' key prefix: their own beside an older build on a cluster.
KEYS_PREFIX=${OWN_PREFIX:-actix-login}
# Every session key, on every node (on a cluster each node is scanned for the keys it holds).
session_keys() {
    local port
    for port in "${REDIS_PORTS[@]}"; do
        redis-cli -p "$port" --scan --pattern "$KEYS_PREFIX:s:*" | sed "s/^/$port /"
    done | sort
}
session_keys >"$WORK/keys-before"
for _ in $(seq "$MEM_SESSIONS"); do
    curl -sS --fail -o /dev/null -X POST -A "$MEM_UA" -H 'sec-fetch-site: same-origin' \
        "http://127.0.0.1:${PORT[actix-login]}/login" || die "actix-login: login for the memory count failed"
done
# Only the sessions those logins made count: the servers' own logins above have other
# User-Agents, and some hold a cart.
read -r record_bytes records < <(session_keys | comm -13 "$WORK/keys-before" - |
    while read -r port key; do
        redis-cli -p "$port" MEMORY USAGE "$key" SAMPLES 0
    done | awk '{ t += $1; n++ } END { printf "%d %d\n", t, n }')
index_bytes=$(redis-cli -c -p "${REDIS_PORTS[0]}" MEMORY USAGE "$KEYS_PREFIX:u:1" SAMPLES 0)
index_members=$(redis-cli -c -p "${REDIS_PORTS[0]}" HLEN "$KEYS_PREFIX:u:1")
((records > 0 && index_members > 0)) || die "no session records found for the memory count"
echo
awk -v r="$record_bytes" -v n="$records" -v i="$index_bytes" -v m="$index_members" 'BEGIN {
    printf "Redis memory per session: %.0f bytes (record %.0f + index entry %.0f; MEMORY USAGE over %d sessions; target <= 512).\n", r / n + i / m, r / n, i / m, n
}'

# ---- login storm (actix-login) ------------------------------------------------------------------

[[ $STORM == 0 ]] && { echo "Total time: $((SECONDS - START_SECONDS)) s." >&2; exit 0; }

name=actix-login
base="http://127.0.0.1:${PORT[$name]}"
for check in "$STORM_FORM 200" "username=storm&password=wrong 401"; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'sec-fetch-site: same-origin' \
        --data "${check% *}" "$base/login-password")
    [[ $code == "${check##* }" ]] || die "$name: POST /login-password with ${check% *} answered $code"
done

# GET /me at a steady pace: each connection pauses between a response and its next request.
{ echo "delay = function() return $STORM_ME_PAUSE_MS end"; cat "$WORK/report.lua"; } >"$WORK/paced.lua"
# The storm: what a browser's login form posts, as fast as the server answers.
{
    echo 'wrk.method = "POST"'
    echo "wrk.body = \"$STORM_FORM\""
    echo 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
    echo 'wrk.headers["Sec-Fetch-Site"] = "same-origin"'
    cat "$WORK/report.lua"
} >"$WORK/storm.lua"

wrk_ok() { # label reqs errors...
    local label=$1 reqs=$2
    shift 2
    (($1 + $2 + $3 + $4 + $5 == 0)) ||
        die "$label: wrk saw errors (connect $1, read $2, write $3, non-2xx $4, timeout $5)"
    ((reqs > 0)) || die "$label: no requests completed"
}

declare -A S_RPS S_P50 S_P99 S_CORES
S_LOGINS=""
# The storm starts a second before /me is measured and ends a second after, so the whole window
# sees a steady storm; a pause after each storm lets hashes still queued finish.
for round in $(seq 1 "$STORM_ROUNDS"); do
    phases="quiet storm"
    ((round % 2 == 0)) && phases="storm quiet"
    for phase in $phases; do
        if [[ $phase == storm ]]; then
            # Logins queue for the hashing threads by design; wrk's 2 s default timeout would
            # count a slow queue on a busy machine as an error, and it is /me that is measured.
            wrk -t1 -c"$STORM_LOGIN_CONNECTIONS" -d"$((STORM_DURATION + 2))s" --timeout 30s -s "$WORK/storm.lua" \
                "$base/login-password" >"$WORK/storm.out" 2>&1 &
            STORM_PID=$!
            sleep 1
        fi
        srv0=$(cpu_ticks "${PID[$name]}")
        t0=$(date +%s%N)
        wrk -t1 -c"$STORM_ME_CONNECTIONS" -d"${STORM_DURATION}s" --latency -s "$WORK/paced.lua" \
            -H "cookie: ${COOKIE[$name]}" "$base/me" >"$WORK/wrk-last.out" 2>&1 ||
            die "$name: wrk failed: $(cat "$WORK/wrk-last.out")"
        t1=$(date +%s%N)
        srv1=$(cpu_ticks "${PID[$name]}")
        read -r _ reqs micros e_connect e_read e_write e_status e_timeout p50 p99 < <(grep '^WRKRESULT ' "$WORK/wrk-last.out") ||
            die "$name: no result from wrk"
        wrk_ok "$name GET /me ($phase)" "$reqs" "$e_connect" "$e_read" "$e_write" "$e_status" "$e_timeout"
        rps=$(awk -v r="$reqs" -v us="$micros" 'BEGIN { printf "%.0f", r / (us / 1e6) }')
        cores=$(awk -v t=$((srv1 - srv0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", t / hz / (ns / 1e9) }')
        S_RPS[$phase]+="$rps " S_P50[$phase]+="$p50 " S_P99[$phase]+="$p99 " S_CORES[$phase]+="$cores "
        logins=""
        if [[ $phase == storm ]]; then
            wait "$STORM_PID" || die "storm wrk failed: $(cat "$WORK/storm.out")"
            STORM_PID=""
            read -r _ lreqs lmicros e_connect e_read e_write e_status e_timeout _ _ < <(grep '^WRKRESULT ' "$WORK/storm.out") ||
                die "no result from the storm's wrk: $(cat "$WORK/storm.out")"
            wrk_ok "$name POST /login-password" "$lreqs" "$e_connect" "$e_read" "$e_write" "$e_status" "$e_timeout"
            logins=$(awk -v r="$lreqs" -v us="$lmicros" 'BEGIN { printf "%.1f", r / (us / 1e6) }')
            S_LOGINS+="$logins "
            sleep 1
        fi
        printf 'storm %d/%d  %-5s %8s req/s  p50 %6s us  p99 %6s us  server %s cores%s\n' "$round" "$STORM_ROUNDS" \
            "$phase" "$rps" "$p50" "$p99" "$cores" "${logins:+  $logins logins/s}" >&2
    done
done

med() { tr ' ' '\n' <<<"$1" | awk NF | median; }
per_round() { local v=${1% }; echo "${v// / \/ }"; }
Q99=$(med "${S_P99[quiet]}")
T99=$(med "${S_P99[storm]}")
echo
echo "## Login storm: actix-login GET /me while POST /login-password runs argon2id"
echo
echo "- /me: wrk -t1 -c$STORM_ME_CONNECTIONS, each connection pausing ${STORM_ME_PAUSE_MS} ms between requests (a steady pace, not a fixed rate); storm: wrk -t1 -c$STORM_LOGIN_CONNECTIONS posting the login form (argon2id m=19456 KiB t=2 p=1, hashing on at most $(( ($(nproc) + 1) / 2 )) thread(s) at nice 10, half of $(nproc) CPUs rounded up)"
echo "- $STORM_ROUNDS quiet and $STORM_ROUNDS storm phase(s) of ${STORM_DURATION} s, alternating$([[ $SMOKE == 1 ]] && echo ', SMOKE RUN: numbers mean nothing')"
echo
echo "| phase | /me req/s | p50 µs | p99 µs | p99 per phase | logins/s | server CPU (cores) |"
echo "|---|---:|---:|---:|---|---:|---:|"
for phase in quiet storm; do
    lps="-"
    [[ $phase == storm ]] && lps=$(med "$S_LOGINS")
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$phase" "$(med "${S_RPS[$phase]}")" \
        "$(med "${S_P50[$phase]}")" "$(med "${S_P99[$phase]}")" "$(per_round "${S_P99[$phase]}")" \
        "$lps" "$(med "${S_CORES[$phase]}")"
done
echo
awk -v q="$Q99" -v s="$T99" 'BEGIN {
    r = q > 0 ? s / q : 0
    printf "storm p99 / quiet p99: %.2f (target: within 2x; %s)\n", r, r <= 2 ? "met" : "NOT met"
}'
echo "Medians over phases. Server CPU is the whole process (Actix worker and hashing threads)"
echo "per second of the /me measurement; logins/s is over the whole storm."
echo "Total time: $((SECONDS - START_SECONDS)) s." >&2
