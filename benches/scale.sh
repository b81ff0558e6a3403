#!/usr/bin/env bash
# actix-login with a million live sessions in one Redis: what they cost in memory, whether an
# authenticated request gets slower when the keyspace is that large, and what listing and
# revoking the sessions of a user at the per-user cap costs.
#
# Two redis-servers on free ports (save "", no AOF, maxmemory with headroom and noeviction, so
# that running out fails loudly instead of dropping sessions), each behind its own server from
# benches/http_server.rs (the `actix-login` variant, one Actix worker, no local cache):
#
#   small   SMALL sessions (1000)
#   large   SESSIONS sessions (10^6)
#
# Both are filled by benches/scale.rs: real logins (POST /login through LoginMiddleware and
# Session::login, in process), PER_USER sessions to a user (2: a phone and a laptop, the common
# case), many in flight over the store's one pipelined Redis connection. Not every user at the
# cap (10^4 x 100): no population looks like that, and every login would then list 100
# sessions, so the load would time the cap rather than the keyspace; the cap gets a few users
# of its own below. Every record holds a client address and a 97-character
# User-Agent, as a browser login's does, and every cookie is written to a file.
#
# Then wrk hits GET /me on both in interleaved rounds, two ways each:
#
#   hot     one cookie for every request (as benches/http.sh does)
#   spread  each request picks one of all the instance's cookies at random (a wrk Lua script
#           that reads a random line of the cookie file), so the large instance's lookups land
#           all over its million keys
#
# and reports req/s, p50, p99, CPU and Redis commands per request, Redis's own execution time per
# command (INFO commandstats usec, apart from I/O), and large / small.
#
# Then, on the large instance, CAP_USERS users log in CAP_SESSIONS times each (100, the
# default cap), and scale.rs times, per user, one more login (past the cap, so it ends the
# oldest) against a new user's first, Sessions::list (LIST_REPEATS times) and
# Sessions::revoke_all (once), with the Redis commands each sends (INFO commandstats).
#
# Memory: INFO memory used_memory on the large instance before and after loading, divided by
# the sessions (records, user indexes and Redis's own per-key overhead: everything they cost),
# and MEMORY USAGE of a random sample of session hashes and index sets (RANDOMKEY). The
# activity log (a list per user, on by default in the crate) is off unless ACTIVITY_LOG=1:
# it is a cost per user and per login, not per session, and the figure then includes it.
#
# Both servers and the loader use IDLE_TIMEOUT_SECS (4 h) instead of the default 30 minutes:
# with the default, every session becomes due for one idle-deadline refresh 3 minutes after its
# login, which would land in the middle of the large instance's measurement and add a script
# call to a third of its requests. This compares steady-state lookups; the refresh is measured
# by benches/http.sh's tables.
#
# Usage, from the repository root:
#   bash benches/scale.sh           10^6 sessions, 5 interleaved rounds x 10 s per target (about
#                                   5 minutes plus the build; about 1 GiB of Redis memory)
#   bash benches/scale.sh --smoke   10^4 sessions, 1 round x 1 s: checks that everything builds,
#                                   loads and answers, never a speed (well under a minute)
#   SESSIONS=100000 bash benches/scale.sh     anything in between
# Needs: cargo, redis-server + redis-cli (7.0 or newer), wrk, curl.
# Knobs (environment): SESSIONS, SMALL (1000), PER_USER (2), CONCURRENCY (256 logins in
# flight), ROUNDS, DURATION (s), WARMUP (s), THREADS (2), CONNECTIONS (32), CAP_USERS (10),
# CAP_SESSIONS (100), LIST_REPEATS (20), MEMORY_SAMPLE (1000 keys), IDLE_TIMEOUT_SECS (14400),
# MAXMEMORY (default 4 KiB a session, at least 512 MiB), REDIS_ARGS (more redis-server options
# for both instances, e.g. "--hash-max-listpack-value 1024"), ACTIVITY_LOG (0; 1 keeps the
# crate's default activity log on in the loader).
set -euo pipefail

SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h | --help) awk 'NR > 1 { if (!/^#/) exit; sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [[ $SMOKE == 1 ]]; then
    SESSIONS=${SESSIONS:-10000} ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-1} WARMUP=${WARMUP:-0}
    CAP_USERS=${CAP_USERS:-2} LIST_REPEATS=${LIST_REPEATS:-3} MEMORY_SAMPLE=${MEMORY_SAMPLE:-200}
else
    SESSIONS=${SESSIONS:-1000000} ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2}
    CAP_USERS=${CAP_USERS:-10} LIST_REPEATS=${LIST_REPEATS:-20} MEMORY_SAMPLE=${MEMORY_SAMPLE:-1000}
fi
SMALL=${SMALL:-1000}
PER_USER=${PER_USER:-2}
CONCURRENCY=${CONCURRENCY:-256}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
CAP_SESSIONS=${CAP_SESSIONS:-100}
IDLE_TIMEOUT_SECS=${IDLE_TIMEOUT_SECS:-14400}
ACTIVITY_LOG=${ACTIVITY_LOG:-0}
MAXMEMORY=${MAXMEMORY:-$((SESSIONS * 4096 > 536870912 ? SESSIONS * 4096 : 536870912))}
REDIS_ARGS=${REDIS_ARGS:-}
export PER_USER CONCURRENCY LIST_REPEATS IDLE_TIMEOUT_SECS ACTIVITY_LOG

INSTANCES=(small large)
MODES=(hot spread)
TARGETS=(small/hot large/hot small/spread large/spread)

die() { echo "scale.sh: $*" >&2; exit 1; }

for tool in cargo redis-server redis-cli wrk curl getconf; do
    command -v "$tool" >/dev/null || die "$tool not found (wrk: apt-get install -y wrk)"
done
[[ -f Cargo.toml && -f benches/scale.rs ]] || die "run me from the repository root"
((SESSIONS >= SMALL && SMALL > 0)) || die "SESSIONS ($SESSIONS) must be at least SMALL ($SMALL), which must be above 0"

START_SECONDS=$SECONDS
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d -t actix-login-scale.XXXXXX)
declare -A REDIS_PID REDIS_PORT SERVER_PID SERVER_PORT COUNT
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${SERVER_PID[@]}" "${REDIS_PID[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PID[@]}" "${REDIS_PID[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status != 0 ]]; then
        echo "scale.sh: failed (exit $status); logs were in $WORK:" >&2
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
    local port
    for _ in $(seq 1 200); do
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

# utime + stime of a whole process (all threads), in clock ticks. The command name sits in
# parentheses and may contain spaces, so count fields after the last ')'.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat") || die "process $1 is gone"
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

rcli() { # instance args...
    local port=${REDIS_PORT[$1]}
    shift
    redis-cli -p "$port" "$@"
}

# "command calls usec" for every Redis command run so far, except INFO (this script's own
# probe). usec is the time Redis spent executing the command itself, without reading the request
# or writing the reply: what the size of the keyspace can change.
redis_calls() { # instance
    rcli "$1" INFO commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_/ { sub(/^cmdstat_/, "", $1); if ($1 != "info") print $1, $3, $5 }' |
        sort
}

info_field() { # instance section field
    rcli "$1" INFO "$2" | tr -d '\r' | awk -F: -v f="$3" '$1 == f { print $2 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else print v[int((NR + 1) / 2)] }'; }
med() { tr ' ' '\n' <<<"$1" | awk NF | median; }

# 1234567 -> "1 234 567", as the README's tables write numbers.
group() { awk -v n="$1" 'BEGIN { s = sprintf("%d", n); o = ""; while (length(s) > 3) { o = " " substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) } print s o }'; }

wait_ready() { # name port pid log
    for _ in $(seq 1 100); do
        kill -0 "$3" 2>/dev/null || die "$1 exited during startup (see $4)"
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$2/me" && return
        sleep 0.1
    done
    die "$1 did not answer on port $2 within 10 s"
}

# ---- build --------------------------------------------------------------------------------------

echo "building the bench targets (release)..." >&2
cargo bench -p actix-login-benches --no-run --bench http_server --bench scale \
    --message-format=json-render-diagnostics >"$WORK/build.json"
executable() { grep -o "\"executable\":\"[^\"]*/$1-[^\"]*\"" "$WORK/build.json" | tail -n 1 | sed 's/^"executable":"//; s/"$//'; }
SERVER_BIN=$(executable http_server)
SCALE_BIN=$(executable scale)
[[ -n $SERVER_BIN && -x $SERVER_BIN ]] || die "could not find the http_server bench executable"
[[ -n $SCALE_BIN && -x $SCALE_BIN ]] || die "could not find the scale bench executable"

# ---- redis and servers --------------------------------------------------------------------------

COUNT[small]=$SMALL
COUNT[large]=$SESSIONS
for name in "${INSTANCES[@]}"; do
    REDIS_PORT[$name]=$(free_port)
    maxmemory=$MAXMEMORY
    [[ $name == small ]] && maxmemory=268435456
    # shellcheck disable=SC2086 # REDIS_ARGS is a list of options
    redis-server --port "${REDIS_PORT[$name]}" --bind 127.0.0.1 --save '' --appendonly no \
        --maxmemory "$maxmemory" --maxmemory-policy noeviction --daemonize no \
        --logfile "$WORK/redis-$name.log" $REDIS_ARGS &
    REDIS_PID[$name]=$!
done
for name in "${INSTANCES[@]}"; do
    for _ in $(seq 1 50); do
        rcli "$name" PING 2>/dev/null | grep -q PONG && break
        kill -0 "${REDIS_PID[$name]}" 2>/dev/null || die "redis-server ($name) exited (see $WORK/redis-$name.log)"
        sleep 0.1
    done
    rcli "$name" PING | grep -q PONG || die "redis-server ($name) did not answer"
done
for name in "${INSTANCES[@]}"; do
    SERVER_PORT[$name]=$(free_port)
    PORT=${SERVER_PORT[$name]} REDIS_URL="redis://127.0.0.1:${REDIS_PORT[$name]}" \
        "$SERVER_BIN" actix-login >"$WORK/server-$name.log" 2>&1 &
    SERVER_PID[$name]=$!
done
for name in "${INSTANCES[@]}"; do
    wait_ready "server ($name)" "${SERVER_PORT[$name]}" "${SERVER_PID[$name]}" "$WORK/server-$name.log"
done

# ---- load ---------------------------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK)
MEM_BEFORE=$(info_field large memory used_memory)
declare -A LOAD_SECS LOAD_REDIS_TICKS
for name in "${INSTANCES[@]}"; do
    echo "loading ${COUNT[$name]} sessions into $name..." >&2
    red0=$(cpu_ticks "${REDIS_PID[$name]}")
    REDIS_URL="redis://127.0.0.1:${REDIS_PORT[$name]}" "$SCALE_BIN" load 0 "${COUNT[$name]}" \
        "$WORK/tokens-$name.txt" >"$WORK/load-$name.out" 2>"$WORK/load-$name.log" ||
        die "loading $name failed: $(tail -n 5 "$WORK/load-$name.log")"
    red1=$(cpu_ticks "${REDIS_PID[$name]}")
    read -r _ made secs < <(grep '^LOAD ' "$WORK/load-$name.out") || die "no result from loading $name"
    ((made == COUNT[$name])) || die "$name: made $made sessions, not ${COUNT[$name]}"
    lines=$(wc -l <"$WORK/tokens-$name.txt")
    ((lines == COUNT[$name])) || die "$name: $lines cookies written, not ${COUNT[$name]}"
    LOAD_SECS[$name]=$secs
    LOAD_REDIS_TICKS[$name]=$((red1 - red0))
done
# What the sessions hold now, before wrk's connections and the cap users add anything.
MEM_AFTER=$(info_field large memory used_memory)
RSS_AFTER=$(info_field large memory used_memory_rss)
KEYS_LARGE=$(rcli large DBSIZE)
USERS=$(((SESSIONS + PER_USER - 1) / PER_USER))
# One hash per session and one index per user, and with the activity log one list per user;
# nothing else.
((KEYS_LARGE == SESSIONS + USERS * (1 + ACTIVITY_LOG))) ||
    die "large: $KEYS_LARGE keys in Redis, not $SESSIONS sessions + $USERS users (ACTIVITY_LOG=$ACTIVITY_LOG)"

# A random sample of keys; session hashes and user indexes are told apart by their prefix.
seq "$MEMORY_SAMPLE" | sed 's/.*/RANDOMKEY/' | rcli large | sort -u >"$WORK/sample.keys"
{ grep '^actix-login:s:' "$WORK/sample.keys" || true; } | awk '{ print "MEMORY USAGE", $0, "SAMPLES 0" }' |
    rcli large >"$WORK/sample.sessions"
{ grep '^actix-login:u:' "$WORK/sample.keys" || true; } | awk '{ print "MEMORY USAGE", $0, "SAMPLES 0"; print "HLEN", $0 }' |
    rcli large | paste - - >"$WORK/sample.indexes"
read -r HASH_N HASH_MIN HASH_MED HASH_MAX < <(sort -n "$WORK/sample.sessions" |
    awk '{ v[NR] = $1 } END { if (NR) print NR, v[1], v[int((NR + 1) / 2)], v[NR]; else print 0, 0, 0, 0 }')
read -r INDEX_N INDEX_PER_ENTRY < <(awk '{ b += $1; m += $2; n++ } END { if (m) printf "%d %.0f\n", n, b / m; else print 0, 0 }' "$WORK/sample.indexes")
((HASH_N > 0)) || die "no session hash in the memory sample"
HASH_ENCODING=$(rcli large OBJECT ENCODING "$(grep -m1 '^actix-login:s:' "$WORK/sample.keys")")

# ---- check --------------------------------------------------------------------------------------

for name in "${INSTANCES[@]}"; do
    base="http://127.0.0.1:${SERVER_PORT[$name]}"
    for cookie in "$(head -n 1 "$WORK/tokens-$name.txt")" "$(tail -n 1 "$WORK/tokens-$name.txt")"; do
        body=$(curl -sS --fail -H "cookie: $cookie" "$base/me") || die "$name: GET /me with a loaded cookie failed"
        [[ $body == '{"id":'*',"username":"user'*'"}' ]] || die "$name: GET /me answered $body"
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' "$base/me")
    [[ $code == 401 ]] || die "$name: GET /me without a cookie answered $code, not 401"
done
declare -A HOT_COOKIE
for name in "${INSTANCES[@]}"; do
    HOT_COOKIE[$name]=$(head -n 1 "$WORK/tokens-$name.txt")
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
for name in "${INSTANCES[@]}"; do
    # Cookies have a fixed length, so a request seeks straight to a random line of the file: no
    # thread loads a million of them first. wrk starts timing only once every thread is set up,
    # so a slow init would let the first thread run untimed while the second loads.
    width=$(($(head -n 1 "$WORK/tokens-$name.txt" | wc -c)))
    awk -v w="$((width - 1))" 'length($0) != w { bad++ } END { exit bad > 0 }' "$WORK/tokens-$name.txt" ||
        die "$name: the cookies are not all $((width - 1)) characters long"
    {
        cat <<LUA
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
init = function(args)
  math.randomseed(os.time() * 1000 + seed)
  cookies = assert(io.open("$WORK/tokens-$name.txt", "rb"))
  cookies:setvbuf("no")
  count = cookies:seek("end") / $width
end
request = function()
  cookies:seek("set", math.random(0, count - 1) * $width)
  return wrk.format(nil, nil, { Cookie = cookies:read($((width - 1))) })
end
LUA
        cat "$WORK/report.lua"
    } >"$WORK/spread-$name.lua"
done

run_wrk() { # target seconds -> WRKRESULT fields
    local name=${1%/*} mode=${1#*/}
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"${2}s" --latency)
    if [[ $mode == hot ]]; then
        args+=(-s "$WORK/report.lua" -H "cookie: ${HOT_COOKIE[$name]}")
    else
        args+=(-s "$WORK/spread-$name.lua")
    fi
    wrk "${args[@]}" "http://127.0.0.1:${SERVER_PORT[$name]}/me" >"$WORK/wrk-last.out" 2>&1 ||
        die "$1: wrk failed: $(cat "$WORK/wrk-last.out")"
    grep '^WRKRESULT ' "$WORK/wrk-last.out" || die "$1: no result from wrk: $(cat "$WORK/wrk-last.out")"
}

declare -A RPS P50 P99 REQS SRV_TICKS RED_TICKS CMDS CMD_CALLS CMD_USEC
for target in "${TARGETS[@]}"; do
    RPS[$target]="" P50[$target]="" P99[$target]="" REQS[$target]=0 SRV_TICKS[$target]=0 RED_TICKS[$target]=0
    CMD_CALLS[$target]=0 CMD_USEC[$target]=0
done

if [[ $WARMUP != 0 ]]; then
    for target in "${TARGETS[@]}"; do
        run_wrk "$target" "$WARMUP" >/dev/null
    done
fi
for round in $(seq 1 "$ROUNDS"); do
    # Each round starts one target later, so no target always follows the same neighbour.
    for i in "${!TARGETS[@]}"; do
        target=${TARGETS[$(((i + round - 1) % ${#TARGETS[@]}))]}
        name=${target%/*}
        redis_calls "$name" >"$WORK/calls.before"
        srv0=$(cpu_ticks "${SERVER_PID[$name]}")
        red0=$(cpu_ticks "${REDIS_PID[$name]}")
        read -r _ reqs micros e_connect e_read e_write e_status e_timeout p50 p99 < <(run_wrk "$target" "$DURATION")
        srv1=$(cpu_ticks "${SERVER_PID[$name]}")
        red1=$(cpu_ticks "${REDIS_PID[$name]}")
        redis_calls "$name" >"$WORK/calls.after"

        errors=$((e_connect + e_read + e_write + e_status + e_timeout))
        ((errors == 0)) || die "$target: wrk saw errors (connect $e_connect, read $e_read, write $e_write, non-2xx $e_status, timeout $e_timeout)"
        ((reqs > 0)) || die "$target: no requests completed"
        rps=$(awk -v r="$reqs" -v us="$micros" 'BEGIN { printf "%.0f", r / (us / 1e6) }')
        RPS[$target]+="$rps " P50[$target]+="$p50 " P99[$target]+="$p99 "
        REQS[$target]=$((REQS[$target] + reqs))
        SRV_TICKS[$target]=$((SRV_TICKS[$target] + srv1 - srv0))
        RED_TICKS[$target]=$((RED_TICKS[$target] + red1 - red0))
        while read -r cmd calls usec; do
            CMDS[$target:$cmd]=$((${CMDS[$target:$cmd]:-0} + calls))
            CMD_CALLS[$target]=$((CMD_CALLS[$target] + calls))
            CMD_USEC[$target]=$((CMD_USEC[$target] + usec))
        done < <(join -a 2 -e 0 -o 0,1.2,1.3,2.2,2.3 "$WORK/calls.before" "$WORK/calls.after" |
            awk '$4 - $2 > 0 { print $1, $4 - $2, $5 - $3 }')
        printf 'round %d/%d  %-13s %8s req/s  p50 %6s us  p99 %6s us\n' \
            "$round" "$ROUNDS" "$target" "$rps" "$p50" "$p99" >&2
    done
done

# ---- a user at the cap --------------------------------------------------------------------------

echo "timing logins, list and revoke_all for $CAP_USERS users with $CAP_SESSIONS sessions each..." >&2
REDIS_URL="redis://127.0.0.1:${REDIS_PORT[large]}" "$SCALE_BIN" cap "$CAP_USERS" "$CAP_SESSIONS" \
    >"$WORK/cap.out" 2>"$WORK/cap.log" || die "the cap measurement failed: $(tail -n 5 "$WORK/cap.log")"
declare -A CAP_N CAP_MED CAP_MAX CAP_CMDS
for op in LOGIN_FIRST LOGIN_FULL LIST REVOKE; do
    read -r _ "CAP_N[$op]" "CAP_MED[$op]" "CAP_MAX[$op]" "CAP_CMDS[$op]" < <(grep "^CAP_$op " "$WORK/cap.out") ||
        die "no $op result from the cap measurement"
done

# ---- report -------------------------------------------------------------------------------------

per_req() { # ticks reqs -> microseconds of CPU per request
    awk -v t="$1" -v hz="$CLK_TCK" -v r="$2" 'BEGIN { printf "%.1f", t * 1e6 / hz / r }'
}
cmd_mix() { # target
    local key mix=""
    for key in "${!CMDS[@]}"; do
        [[ $key == "$1:"* ]] || continue
        mix+="$(awk -v c="${CMDS[$key]}" -v r="${REQS[$1]}" -v k="${key#*:}" 'BEGIN { printf "%s %.2f", toupper(k), c / r }'), "
    done
    mix=$(tr ',' '\n' <<<"${mix%, }" | sed 's/^ *//' | awk NF | sort | paste -sd, - | sed 's/,/, /g')
    echo "${mix:-none}"
}
exec_us() { # target -> microseconds Redis spent executing each command, from commandstats
    awk -v u="${CMD_USEC[$1]}" -v c="${CMD_CALLS[$1]}" 'BEGIN { printf "%.2f", (c > 0 ? u / c : 0) }'
}
spaced() { sed 's/,/, /g; s/=/ /g' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

declare -A M_RPS M_P50 M_P99
for target in "${TARGETS[@]}"; do
    M_RPS[$target]=$(med "${RPS[$target]}")
    M_P50[$target]=$(med "${P50[$target]}")
    M_P99[$target]=$(med "${P99[$target]}")
done
MEM_DELTA=$((MEM_AFTER - MEM_BEFORE))
PER_SESSION=$(awk -v d="$MEM_DELTA" -v n="$SESSIONS" 'BEGIN { printf "%.0f", d / n }')
MIB() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
LOAD_RATE=$(awk -v n="$SESSIONS" -v s="${LOAD_SECS[large]}" 'BEGIN { printf "%.0f", n / s }')
SMOKE_NOTE=""
[[ $SMOKE == 1 ]] && SMOKE_NOTE=', SMOKE RUN: numbers mean nothing'

CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
REDIS_VERSION=$(redis-server --version | grep -o 'v=[^ ]*' | sed 's/v=/redis /')
LISTPACK_VALUE=$(rcli large CONFIG GET hash-max-listpack-value | tail -n 1)

echo "# actix-login at scale: $(group "$SESSIONS") live sessions in one Redis"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- machine: $(nproc) CPUs, $CPU_MODEL, $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr), load average $LOAD_AT_START at start (other work shares the machine)"
echo "- tools: $(rustc --version), $REDIS_VERSION, $(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
echo "- Redis: save \"\", no AOF, maxmemory $(MIB "$MAXMEMORY") noeviction, hash-max-listpack-value $LISTPACK_VALUE${REDIS_ARGS:+, extra options: $REDIS_ARGS}"
echo "- sessions: $(group "$SESSIONS") ($(group "$USERS") users x $PER_USER) in the large instance, $(group "$SMALL") in the small one; idle timeout ${IDLE_TIMEOUT_SECS} s in the loader and both servers; activity log $( ((ACTIVITY_LOG)) && echo on || echo off)"
echo "- load: wrk -t$THREADS -c$CONNECTIONS on GET /me, $ROUNDS interleaved round(s) x ${DURATION} s per target (after ${WARMUP} s warm-up each), one Actix worker per server, no local cache$SMOKE_NOTE"
echo
echo "| target | sessions | req/s (median) | req/s per round | p50 µs | p99 µs | server CPU µs/req | Redis CPU µs/req | Redis µs/command | Redis commands per request |"
echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"
for target in "${TARGETS[@]}"; do
    name=${target%/*}
    rounds=${RPS[$target]% }
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$(group "${COUNT[$name]}")" \
        "$(group "${M_RPS[$target]}")" "${rounds// / \/ }" "${M_P50[$target]}" "${M_P99[$target]}" \
        "$(per_req "${SRV_TICKS[$target]}" "${REQS[$target]}")" "$(per_req "${RED_TICKS[$target]}" "${REQS[$target]}")" \
        "$(exec_us "$target")" "$(cmd_mix "$target")"
done
echo
echo "hot: one session's cookie on every request; spread: a random one of the instance's sessions"
echo "per request (a wrk Lua script, which costs wrk some CPU: compare hot with hot, spread with"
echo "spread). Medians over rounds; CPU (/proc/<pid>/stat, ${CLK_TCK} ticks/s) and commands (INFO"
echo "commandstats) are totals over all rounds divided by all requests. Redis CPU per request"
echo "includes its network I/O, which depends on how many requests arrive together; Redis µs/command"
echo "is the commands' own execution time (commandstats usec), where a larger keyspace would show."
echo "wrk, both Redis instances and both servers share the same $(nproc) cores."
echo
echo "## Summary"
echo
echo "| check | figure |"
echo "|---|---|"
echo "| run | $(date -u '+%Y-%m-%d'), \`benches/scale.sh\`, $(nproc) CPUs ($CPU_MODEL), load average $LOAD_AT_START at start, $REDIS_VERSION, hash-max-listpack-value $LISTPACK_VALUE$SMOKE_NOTE |"
echo "| sessions loaded | $(group "$SESSIONS") ($(group "$USERS") users x $PER_USER) in ${LOAD_SECS[large]} s, $(group "$LOAD_RATE") logins/s (in-process logins, $CONCURRENCY in flight on one pipelined connection; Redis CPU $(per_req "${LOAD_REDIS_TICKS[large]}" "$SESSIONS") µs/login) |"
echo "| Redis memory, total | $(MIB "$MEM_DELTA") (used_memory $(MIB "$MEM_BEFORE") -> $(MIB "$MEM_AFTER"); RSS $(MIB "$RSS_AFTER"); $(group "$KEYS_LARGE") keys) |"
echo "| Redis memory per session | $(group "$PER_SESSION") B (used_memory delta / sessions: record, index entry, key overhead) |"
echo "| MEMORY USAGE, sample | session hash: median $HASH_MED B (min $HASH_MIN, max $HASH_MAX; $HASH_N keys, $HASH_ENCODING); user index: $INDEX_PER_ENTRY B per entry ($INDEX_N hashes of $PER_USER) |"
for mode in "${MODES[@]}"; do
    echo "| GET /me, $mode: $(group "$SMALL") -> $(group "$SESSIONS") sessions | $(group "${M_RPS[small/$mode]}") -> $(group "${M_RPS[large/$mode]}") req/s ($(ratio "${M_RPS[large/$mode]}" "${M_RPS[small/$mode]}")x); p50 ${M_P50[small/$mode]} -> ${M_P50[large/$mode]} µs; p99 ${M_P99[small/$mode]} -> ${M_P99[large/$mode]} µs; Redis CPU $(per_req "${RED_TICKS[small/$mode]}" "${REQS[small/$mode]}") -> $(per_req "${RED_TICKS[large/$mode]}" "${REQS[large/$mode]}") µs/req; HMGET itself $(exec_us "small/$mode") -> $(exec_us "large/$mode") µs |"
done
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
cap_row() { # op label
    echo "| $2 | median $(ms "${CAP_MED[$1]}") ms (max $(ms "${CAP_MAX[$1]}"), ${CAP_N[$1]} calls over $CAP_USERS users); Redis: $(spaced "${CAP_CMDS[$1]}") |"
}
cap_row LOGIN_FIRST "login, a user's first session"
cap_row LOGIN_FULL "login past the cap ($CAP_SESSIONS sessions; ends the oldest)"
cap_row LIST "\`Sessions::list\`, user at the cap ($CAP_SESSIONS)"
cap_row REVOKE "\`Sessions::revoke_all\`, user at the cap ($CAP_SESSIONS)"
echo
echo "Total time: $((SECONDS - START_SECONDS)) s." >&2
