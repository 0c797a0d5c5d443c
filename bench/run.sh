#!/usr/bin/env bash
# The kca benchmark: kca (Postgres and SQLite) against cfssl (storing nothing, and storing into its
# SQLite certdb) under the same wrk load, in one session, alternating targets so that all see the
# same noise. Prints one table and writes bench/out/results.json. See bench/README.md.
#
#   bash bench/run.sh                 full run (about 20 minutes on 2 cores, after the build)
#   bash bench/run.sh --smoke         every step with tiny durations; exits non-zero if broken
#   bash bench/run.sh --compare REV   only kubeconfig issuance at c=32 on Postgres over TLS, this
#                                     checkout against commit REV, alternating: CPU per kubeconfig
#   bash bench/run.sh --only revocation [--compare REV]
#                                     only the revocation latency (kca on Postgres over TLS, the
#                                     operators CA seeded with --seeded N revoked entries, default
#                                     100,000): --repeats rounds of --revocations N (default 100)
#                                     each; with --compare, this checkout and REV alternate rounds
#
# Options: --duration S (seconds per measured run, default 10), --repeats N (default 3),
# --release / --dev (build profile; full runs default to release, smoke to dev), --no-perf,
# --keep (keep the temporary directory and its logs), --out DIR (default bench/out),
# --baseline-bin FILE (with --compare: a kca binary already built at REV, used as it is),
# --no-build (use the kca and kca-bench binaries already in the target directory).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
OUT=$BENCH/out
SMOKE=0
DURATION=10
REPEATS=3
PROFILE=
PERF=1
KEEP=0
COMPARE=
ONLY=
BASELINE_BIN=
SEEDED=
REVOCATIONS=
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --duration) DURATION=$2; shift ;;
        --repeats) REPEATS=$2; shift ;;
        --release) PROFILE=release ;;
        --dev) PROFILE=dev ;;
        --no-perf) PERF=0 ;;
        --keep) KEEP=1 ;;
        --out) OUT=$2; shift ;;
        --compare) COMPARE=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --baseline-bin) BASELINE_BIN=$2; shift ;;
        --seeded) SEEDED=$2; shift ;;
        --revocations) REVOCATIONS=$2; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$SMOKE" = 1 ]; then
    DURATION=1; REPEATS=1; PERF=0
    WARMUP=0.5; CEILING_SECONDS=1; REVOKE_COUNT=5
    REVOKED_LEVELS=(0 1000); STORED_SEED=10000; STORED_REVOKED=1000
    BULK_USERS=2; BULK_CERTIFICATES=1000; RESTARTS=2
    PROFILE=${PROFILE:-dev}
else
    WARMUP=2; CEILING_SECONDS=$DURATION; REVOKE_COUNT=100
    REVOKED_LEVELS=(0 10000 100000); STORED_SEED=1000000; STORED_REVOKED=100000
    BULK_USERS=5; BULK_CERTIFICATES=10000; RESTARTS=5
    PROFILE=${PROFILE:-release}
fi
case "$ONLY" in
    ""|revocation) ;;
    *) echo "bench: --only takes 'revocation'" >&2; exit 2 ;;
esac
REVOKE_COUNT=${REVOCATIONS:-$REVOKE_COUNT}
CONCURRENCIES=(1 8 32)
PG_HOST=127.0.0.1
PG_SOCKET=/var/run/postgresql
# kca reaches Postgres as production does: over TCP with TLS (kca-pg, and every other kca on
# Postgres). For comparison, the same over plain TCP (kca-pg-tcp) and over the unix socket
# (kca-pg-unix), at c = 32. And kca-pg with its CA keys in a SoftHSM2 token (kca-hsm), at c = 32.
pg_url() { # pg_url DATABASE tls|tcp|unix
    case "$2" in
        tls) echo "postgres://postgres@$PG_HOST:5432/$1?sslmode=require" ;;
        tcp) echo "postgres://postgres@$PG_HOST:5432/$1?sslmode=disable" ;;
        unix) echo "postgres://postgres@localhost/$1?host=$PG_SOCKET" ;;
    esac
}
PG_ADMIN=(-h "$PG_HOST" -U postgres)
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
FAILURES=()
fail() { log "FAILED: $*"; FAILURES+=("$*"); }
die() { log "FATAL: $*"; exit 1; }

# --- Tools -----------------------------------------------------------------------------------

need=()
for pair in wrk:wrk cfssl:golang-cfssl cfssljson:golang-cfssl jq:jq sqlite3:sqlite3 psql:postgresql-client \
    createdb:postgresql-client openssl:openssl curl:curl ss:iproute2 softhsm2-util:softhsm2; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "cargo is needed"
pg_isready -h "$PG_HOST" -q || die "Postgres is not answering on $PG_HOST:5432"

# --- Build -----------------------------------------------------------------------------------

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$PROFILE" = release ]; then CARGO_PROFILE=(--release); BIN_DIR=$CARGO_TARGET_DIR/release
else CARGO_PROFILE=(); BIN_DIR=$CARGO_TARGET_DIR/debug; fi
if [ -n "$COMPARE" ] && [ -n "$BASELINE_BIN" ]; then
    [ -x "$BASELINE_BIN" ] || die "no kca binary at $BASELINE_BIN"
    mkdir -p "$BIN_DIR"
    [ "$(realpath "$BASELINE_BIN")" = "$(realpath -m "$BIN_DIR/kca-baseline")" ] || cp "$BASELINE_BIN" "$BIN_DIR/kca-baseline"
elif [ -n "$COMPARE" ]; then
    # The baseline is built first, in the same target directory (its dependencies are reused),
    # and set aside; this checkout's build below then replaces target/.../kca.
    BASELINE_SRC=$(mktemp -d /tmp/kca-bench-baseline.XXXXXX)
    git -C "$ROOT" worktree add --quiet --detach "$BASELINE_SRC" "$COMPARE" || die "no commit $COMPARE"
    log "building kca at $COMPARE ($PROFILE)"
    (cd "$BASELINE_SRC" && cargo build --quiet "${CARGO_PROFILE[@]}" --bin kca) || die "cargo build of $COMPARE failed"
    cp "$BIN_DIR/kca" "$BIN_DIR/kca-baseline"
    git -C "$ROOT" worktree remove --force "$BASELINE_SRC"
fi
if [ "$BUILD" = 1 ]; then
    log "building kca and kca-bench ($PROFILE)"
    (cd "$ROOT" && cargo build --quiet "${CARGO_PROFILE[@]}" --bin kca) || die "cargo build of kca failed"
    cargo build --quiet "${CARGO_PROFILE[@]}" --manifest-path "$BENCH/loadgen/Cargo.toml" \
        || die "cargo build of bench/loadgen failed"
fi
KCA=$BIN_DIR/kca
KCA_BENCH=$BIN_DIR/kca-bench

# --- Processes, databases and clean-up -------------------------------------------------------

WORK=$(mktemp -d /tmp/kca-bench.XXXXXX)
mkdir -p "$WORK/logs" "$OUT"
RUN_ID=$$
DATABASES=()
PIDS=()
WATCHDOG=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for db in "${DATABASES[@]}"; do dropdb "${PG_ADMIN[@]}" --if-exists --force "$db" 2>/dev/null || true; done
    if [ "$status" != 0 ] || [ "$KEEP" = 1 ]; then
        rm -rf "$OUT/logs" && cp -r "$WORK/logs" "$OUT/logs" 2>/dev/null || true
        log "logs kept in $OUT/logs"
    fi
    [ "$KEEP" = 1 ] && log "work directory kept: $WORK" || rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# Everything below stops by itself: a watchdog ends the run if it takes far longer than planned.
if [ "$SMOKE" = 1 ]; then LIMIT=600; else LIMIT=$((3600 + 60 * DURATION * REPEATS)); fi
(
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep "$LIMIT" & nap=$!
    wait "$nap" && { log "watchdog: the run exceeded $LIMIT s"; kill -TERM $$; }
) &
WATCHDOG=$!

# A port below the ephemeral range (32768 and up on Linux), where no client socket takes its source
# port, that no socket uses now: one from 20000-49999 once was taken by an outgoing connection
# between this check and kca binding it.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        [ -z "$(ss -Htan "sport = :$port")" ] && { echo "$port"; return; }
    done
}

# start NAME command...: run in the background, stderr and stdout to logs/NAME.log; sets LAST_PID.
start() {
    local name=$1; shift
    "$@" >"$WORK/logs/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cpu_ticks() { # utime + stime of a process (all its threads), in clock ticks
    local line rest
    { read -r line <"/proc/$1/stat"; } 2>/dev/null || { echo 0; return; }
    rest=${line##*) }
    read -ra f <<<"$rest"
    echo $((f[11] + f[12]))
}

pg_ticks() { # CPU of the Postgres processes serving database $1: its backends and the writers
    local total=0 stat line pid cmd rest
    for stat in /proc/[0-9]*/stat; do
        { read -r line <"$stat"; } 2>/dev/null || continue
        [[ $line == *" (postgres) "* ]] || continue
        pid=${stat#/proc/}; pid=${pid%/stat}
        cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
        case "$cmd" in
            *" $1 "*|*checkpointer*|*"background writer"*|*walwriter*|*"autovacuum worker $1"*) ;;
            *) continue ;;
        esac
        rest=${line##*) }
        read -ra f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

machine_jiffies() { # "busy total" jiffies of all CPUs since boot, from /proc/stat
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    echo "$((user + nice + system + irq + softirq + steal)) $((user + nice + system + idle + iowait + irq + softirq + steal))"
}

rss_kb() {
    local key value rest
    while read -r key value rest; do
        [ "$key" = "VmRSS:" ] && { echo "$value"; return; }
    done 2>/dev/null <"/proc/$1/status"
    echo 0
}

sample_rss() { # keep the largest VmRSS of $1 in file $2 until killed
    local max=0 now
    while kill -0 "$1" 2>/dev/null; do
        now=$(rss_kb "$1")
        # Written aside and renamed, so that a reader never sees a half-written file.
        [ "$now" -gt "$max" ] && { max=$now; echo "$max" >"$2.new" && mv -f "$2.new" "$2"; }
        sleep 0.25
    done
}

psql_db() { psql "${PG_ADMIN[@]}" -d "$1" -v ON_ERROR_STOP=1 -qAtc "$2"; }

create_database() { # create_database SUFFIX TARGET: a fresh database, named in DB[TARGET]
    local db="kca_bench_${RUN_ID}_$1"
    createdb "${PG_ADMIN[@]}" "$db" || die "createdb $db failed"
    DATABASES+=("$db")
    DB[$2]=$db
}

# --- Shared material: serving certificate, master key, request bodies -------------------------

log "work directory $WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" 2>/dev/null
CACERT=$WORK/tls-cert.pem
head -c 32 /dev/urandom >"$WORK/master.key"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=g/CN=u" \
    -keyout "$WORK/user-key.pem" -out "$WORK/user.csr" 2>/dev/null
echo '{"user":"u","groups":["g"]}' >"$WORK/kca-issue.json"
jq -n --rawfile csr "$WORK/user.csr" '{user:"u",groups:["g"],csr_pem:$csr}' >"$WORK/kca-csr.json"
echo '{"request":{"CN":"u","names":[{"O":"g"}],"key":{"algo":"ecdsa","size":256}},"profile":"client"}' \
    >"$WORK/cfssl-issue.json"
jq -n --rawfile csr "$WORK/user.csr" '{certificate_request:$csr,profile:"client"}' >"$WORK/cfssl-csr.json"

# --- kca ---------------------------------------------------------------------------------------

declare -A URL PID DB TOKEN KIND BINARY EXTRA_ENV CLUSTER_FIELDS

# start_kca NAME DATABASE_URL|"": serve from $WORK/NAME; sets URL, PID and READY_MS (spawn to
# the first 200 on /readyz).
start_kca() {
    local name=$1 database_url=$2 port since ready
    port=$(free_port)
    local args=(serve --data-dir "$WORK/$name" --master-key-file "$WORK/master.key"
        --listen "127.0.0.1:$port" --tls-cert "$WORK/tls-cert.pem" --tls-key "$WORK/tls-key.pem")
    [ -n "$database_url" ] && args+=(--database-url "$database_url")
    since=$(date +%s%N)
    # shellcheck disable=SC2086 # EXTRA_ENV holds NAME=VALUE words (paths without spaces)
    start "$name" env ${EXTRA_ENV[$name]:-} "${BINARY[$name]:-$KCA}" "${args[@]}"
    PID[$name]=$LAST_PID
    URL[$name]=https://127.0.0.1:$port
    KIND[$name]=kca
    ready=$("$KCA_BENCH" wait-ready --url "${URL[$name]}" --cacert "$CACERT" --since-ns "$since" --timeout 30) \
        || die "kca $name did not become ready: $(tail -5 "$WORK/logs/$name.log")"
    READY_MS=$(jq -r .ready_ms <<<"$ready")
}

# A token and a cluster named bench in kca NAME.
setup_kca() {
    local name=$1 database_url=$2 args=()
    args=(token create --data-dir "$WORK/$name-operator" --master-key-file "$WORK/master.key"
        --subject bench --scope admin --ttl 6h)
    if [ -n "$database_url" ]; then args+=(--database-url "$database_url")
    else args+=(--database-url "sqlite://$WORK/$name/kca.db"); fi
    TOKEN[$name]=$("${BINARY[$name]:-$KCA}" "${args[@]}" 2>>"$WORK/logs/$name-token.log") || die "kca token create failed for $name"
    local status
    status=$(curl -sS -o "$WORK/logs/$name-cluster.json" -w '%{http_code}' --max-time 30 --cacert "$CACERT" \
        -H "Authorization: Bearer ${TOKEN[$name]}" -H 'Content-Type: application/json' \
        -d "{\"name\":\"bench\",\"server\":\"https://k8s.bench.example:6443\"${CLUSTER_FIELDS[$name]:-}}" \
        "${URL[$name]}/v1/clusters")
    [ "$status" = 201 ] || die "creating the bench cluster in $name answered $status: $(cat "$WORK/logs/$name-cluster.json")"
}

stored_rows() { # rows in the certificate table a target writes to; empty when it stores nothing
    case "$1" in
        kca-pg|kca-pg-tcp|kca-pg-unix|kca-hsm|kca-empty|kca-1m|kca-baseline) psql_db "${DB[$1]}" "SELECT count(*) FROM certificates" ;;
        kca-sqlite) sqlite3 -cmd ".timeout 10000" "$WORK/kca-sqlite/kca.db" "SELECT count(*) FROM certificates" ;;
        cfssl-db) sqlite3 -cmd ".timeout 10000" "$WORK/cfssl/certs.db" "SELECT count(*) FROM certificates" ;;
        *) echo "" ;;
    esac
}

# What a scenario sends to a target: sets REQ_PATH, REQ_METHOD, REQ_BODY, REQ_HEADERS, REQ_EXPECT.
request_for() {
    local scenario=$1 target=$2
    REQ_HEADERS=""
    REQ_METHOD=POST
    if [ "${KIND[$target]}" = kca ]; then
        REQ_HEADERS="Authorization: Bearer ${TOKEN[$target]}"
        case "$scenario" in
            issue) REQ_PATH=/v1/clusters/bench/kubeconfigs; REQ_BODY=$WORK/kca-issue.json; REQ_EXPECT=201 ;;
            csr) REQ_PATH=/v1/clusters/bench/kubeconfigs; REQ_BODY=$WORK/kca-csr.json; REQ_EXPECT=201 ;;
            crl|crl304|crl_large|crl304_large)
                REQ_METHOD=GET; REQ_BODY=""; REQ_HEADERS=""; REQ_EXPECT=200
                REQ_PATH=/v1/clusters/bench/authorities/operators/crl.pem
                if [[ $scenario == crl304* ]]; then
                    local etag
                    etag=$(curl -sS -D - -o /dev/null --max-time 10 --cacert "$CACERT" "${URL[$target]}$REQ_PATH" \
                        | tr -d '\r' | awk 'tolower($1)=="etag:"{print $2}')
                    [ -n "$etag" ] || die "no ETag on ${URL[$target]}$REQ_PATH"
                    REQ_HEADERS="If-None-Match: $etag"; REQ_EXPECT=304
                fi ;;
        esac
    else
        case "$scenario" in
            issue) REQ_PATH=/api/v1/cfssl/newcert; REQ_BODY=$WORK/cfssl-issue.json ;;
            csr) REQ_PATH=/api/v1/cfssl/sign; REQ_BODY=$WORK/cfssl-csr.json ;;
        esac
        REQ_EXPECT=200
    fi
}

# One request with curl: the answer must have the expected status and carry a certificate.
check_target() {
    local scenario=$1 target=$2 status args=()
    request_for "$scenario" "$target"
    args=(-sS -o "$WORK/check.out" -w '%{http_code}' --max-time 30 --cacert "$CACERT" -X "$REQ_METHOD")
    [ -n "$REQ_BODY" ] && args+=(-H 'Content-Type: application/json' --data-binary "@$REQ_BODY")
    [ -n "$REQ_HEADERS" ] && args+=(-H "$REQ_HEADERS")
    status=$(curl "${args[@]}" "${URL[$target]}$REQ_PATH") || status=000
    if [ "$status" != "$REQ_EXPECT" ]; then
        fail "$scenario on $target answered $status, not $REQ_EXPECT: $(head -c 300 "$WORK/check.out")"
        return 1
    fi
    case "$scenario" in
        issue|csr) grep -q 'BEGIN CERTIFICATE' "$WORK/check.out" || { fail "$scenario on $target: no certificate"; return 1; } ;;
        crl) grep -q 'BEGIN X509 CRL' "$WORK/check.out" || { fail "crl on $target: no CRL"; return 1; } ;;
    esac
}

# run_load SCENARIO TARGET CONCURRENCY SECONDS [REPEAT]: one wrk run; with REPEAT, the result is
# appended to runs.jsonl, with server CPU, peak RSS and the rows the target stored meanwhile.
run_load() {
    local scenario=$1 target=$2 conc=$3 seconds=$4 repeat=${5:-}
    local threads=$((conc < 2 ? conc : 2)) pid=${PID[$target]}
    request_for "$scenario" "$target"
    local rows_before="" cpu_before pg_before=0 rss_file=$WORK/rss.$target sampler output result
    [[ $scenario == issue || $scenario == csr ]] && rows_before=$(stored_rows "$target")
    cpu_before=$(cpu_ticks "$pid")
    local machine_before machine_after
    machine_before=$(machine_jiffies)
    [ -n "${DB[$target]:-}" ] && pg_before=$(pg_ticks "${DB[$target]}")
    echo 0 >"$rss_file"
    sample_rss "$pid" "$rss_file" 2>/dev/null &
    sampler=$!
    output=$(WRK_METHOD=$REQ_METHOD WRK_BODY_FILE=$REQ_BODY WRK_HEADERS=$REQ_HEADERS \
        wrk -t "$threads" -c "$conc" -d "${seconds}s" --timeout 10s -s "$BENCH/wrk/request.lua" \
        "${URL[$target]}$REQ_PATH" 2>&1) || true
    { kill "$sampler"; wait "$sampler"; } 2>/dev/null || true
    [ -z "$repeat" ] && return 0
    local cpu_after pg_after=0 rows_after=""
    cpu_after=$(cpu_ticks "$pid")
    machine_after=$(machine_jiffies)
    local busy_pct
    busy_pct=$(awk -v b="$machine_before" -v a="$machine_after" 'BEGIN { split(b, x, " "); split(a, y, " ");
        if (y[2] > x[2]) printf "%.1f", 100 * (y[1] - x[1]) / (y[2] - x[2]); else print "null" }')
    [ -n "${DB[$target]:-}" ] && pg_after=$(pg_ticks "${DB[$target]}")
    [ -n "$rows_before" ] && rows_after=$(stored_rows "$target")
    result=$(grep '^RESULT ' <<<"$output" | sed 's/^RESULT //') || true
    if [ -z "$result" ]; then
        fail "wrk gave no result for $scenario on $target at $conc: $output"
        return 0
    fi
    local stored=null rss
    [ -n "$rows_before" ] && stored=$((rows_after - rows_before))
    rss=$(cat "$rss_file" 2>/dev/null || true)
    [[ $rss =~ ^[0-9]+$ ]] || rss=0
    [[ $busy_pct =~ ^[0-9.]+$ ]] || busy_pct=null
    local record
    record=$(jq -c --arg scenario "$scenario" --arg target "$target" --argjson conc "$conc" \
        --argjson repeat "$repeat" --argjson server_ticks "$((cpu_after - cpu_before))" \
        --argjson db_ticks "$((pg_after - pg_before))" --argjson tck "$CLK_TCK" \
        --argjson rss "$rss" --argjson stored "$stored" --argjson busy "$busy_pct" \
        --argjson other_ticks "$(( (${machine_after%% *} - ${machine_before%% *}) - (cpu_after - cpu_before) - (pg_after - pg_before) ))" '
        . as $w | ($w.requests / ($w.duration_us / 1e6)) as $rps |
        {scenario: $scenario, target: $target, concurrency: $conc, repeat: $repeat,
         requests: $w.requests, seconds: ($w.duration_us / 1e6), rps: $rps,
         p50_ms: ($w.p50_us / 1000), p90_ms: ($w.p90_us / 1000), p99_ms: ($w.p99_us / 1000),
         max_ms: ($w.max_us / 1000),
         errors: ($w.errors_connect + $w.errors_read + $w.errors_write + $w.errors_status),
         timeouts: $w.errors_timeout,
         server_cpu_ms_per_req: (if $w.requests > 0 then $server_ticks / $tck * 1000 / $w.requests else null end),
         db_cpu_ms_per_req: (if $w.requests > 0 then $db_ticks / $tck * 1000 / $w.requests else null end),
         cpu_ms_per_req: (if $w.requests > 0 then ($server_ticks + $db_ticks) / $tck * 1000 / $w.requests else null end),
         peak_rss_kb: $rss, stored: $stored, machine_busy_pct: $busy,
         other_cpu_ms_per_req: (if $w.requests > 0 then $other_ticks / $tck * 1000 / $w.requests else null end)}' \
        <<<"$result") || { fail "could not record $scenario on $target at c=$conc: $result"; return 0; }
    echo "$record" >>"$WORK/runs.jsonl"
    log "$(jq -r '"\(.scenario) \(.target) c=\(.concurrency): \(.rps|floor) req/s, p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, cpu \(.cpu_ms_per_req*1000|floor/1000) ms/req" + (if .errors > 0 then ", \(.errors) ERRORS" else "" end)' <<<"$record")"
    local errors requests
    errors=$(jq .errors <<<"$record"); requests=$(jq .requests <<<"$record")
    if [ "$errors" -gt 0 ]; then
        # cfssl's SQLite certdb answers an occasional error under load (status 11000, its database
        # error): that is cfssl's result, shown in the table, not a broken run.
        if [ "${KIND[$target]}" = kca ]; then
            fail "$scenario on $target at c=$conc: $errors errors (non-2xx/3xx or socket errors)"
        else
            log "$scenario on $target at c=$conc: $errors errors, counted in the table"
        fi
    fi
    [ "$requests" -gt 0 ] || fail "$scenario on $target at c=$conc: no request completed"
    if [ "$stored" != null ] && [ "$stored" -lt "$requests" ]; then
        fail "$scenario on $target: $requests answered but only $stored certificates stored"
    fi
    return 0
}

# --- Seeding certificates in SQL (the revocation tests) ---------------------------------------

OPERATORS_SQL="SELECT a.id, a.cluster_id, a.generation FROM authorities a JOIN clusters c ON c.id = a.cluster_id
    WHERE c.name = 'bench' AND a.kind = 'operators' AND a.state = 'active'"

# seed_certificates DB FROM TO REVOKED: rows FROM..TO of dummy certificates of the bench cluster's
# operators CA (unique serials 7E<hex>; revoked ones expire in a day, stored ones in an hour).
# Revoked rows are numbered as kca numbers a revocation (the authority's counter, raised in the
# same transaction), where the schema has that (a --compare baseline may predate it).
seed_certificates() {
    local db=$1 from=$2 to=$3 revoked=$4 prefix revoked_at reason number=() count=()
    if [ "$revoked" = 1 ]; then prefix=7E; revoked_at="now() - interval '1 minute'"; reason="'keyCompromise'"
    else prefix=7D; revoked_at=NULL; reason=NULL; fi
    if [ "$revoked" = 1 ] && [ "$(psql_db "$db" "SELECT count(*) FROM information_schema.columns
            WHERE table_name = 'certificates' AND column_name = 'revocation_seq'")" = 1 ]; then
        count=("UPDATE authorities SET revocations = revocations + 1 WHERE id = (SELECT id FROM ($OPERATORS_SQL) o);")
        number=(", revocation_seq" ", (SELECT revocations FROM authorities WHERE id = a.id)")
    fi
    psql_db "$db" "${count[0]:-}
        INSERT INTO certificates (serial, cluster_id, authority_id, kind, generation, profile, common_name,
            groups, dns_names, ip_addresses, not_before, not_after, fingerprint, certificate_der, issued_by,
            created_at, revoked_at, revocation_reason${number[0]:-})
        SELECT '$prefix' || upper(lpad(to_hex(g), 30, '0')), a.cluster_id, a.id, 'operators', a.generation,
            'user', 'seed-' || g, '[\"g\"]', '[]', '[]', now() - interval '5 minutes',
            now() + CASE WHEN $revoked = 1 THEN interval '1 day' ELSE interval '1 hour' END,
            'seed', decode(repeat('5eed', 300), 'hex'), 'bench-seed', now(), $revoked_at, $reason${number[1]:-}
        FROM ($OPERATORS_SQL) a, generate_series($from, $to) g;" || die "seeding $db failed"
    # Leave the table as a long-lived one would be: vacuumed (or autovacuum would start on it
    # during the measurement) and its pages written out (or a checkpoint would).
    psql_db "$db" "VACUUM (ANALYZE) certificates" || die "vacuuming $db failed"
    psql_db "$db" "CHECKPOINT" || true
}

# --- With --only revocation: the revocation latency, and nothing else ---------------------------

if [ "$ONLY" = revocation ]; then
    level=${SEEDED:-${REVOKED_LEVELS[-1]}}
    targets=(kca-pg)
    if [ -n "$COMPARE" ]; then BINARY[kca-baseline]=$BIN_DIR/kca-baseline; targets+=(kca-baseline); fi
    for target in "${targets[@]}"; do
        create_database "$target" "$target"
        start_kca "$target" "$(pg_url "${DB[$target]}" tls)"
        setup_kca "$target" "$(pg_url "${DB[$target]}" tls)"
        log "seeding $level revoked certificates for $target"
        [ "$level" -gt 0 ] && seed_certificates "${DB[$target]}" 1 "$level" 1
    done
    log "revocation latency with $level seeded revoked entries: $REPEATS alternating rounds of $REVOKE_COUNT \
revocations on ${targets[*]}"
    : >"$WORK/revocation.jsonl"
    for repeat in $(seq 1 "$REPEATS"); do
        for target in "${targets[@]}"; do
            if result=$(KCA_BENCH_TOKEN=${TOKEN[$target]} "$KCA_BENCH" revoke --url "${URL[$target]}" --cacert "$CACERT" \
                --cluster bench --count "$REVOKE_COUNT" --user-prefix "revoke-$repeat"); then
                jq -c --arg target "$target" --argjson repeat "$repeat" '. + {target: $target, repeat: $repeat}' \
                    <<<"$result" >>"$WORK/revocation.jsonl"
                log "$target round $repeat: $(jq -r '"p50 \(.p50_ms|.*10|floor/10) ms, p99 \(.p99_ms|.*10|floor/10) ms, CRL \(.crl_entries) entries, \(.crl_bytes) bytes"' <<<"$result")"
            else
                fail "revocation latency on $target, round $repeat"
            fi
        done
    done
    jq -s --arg head "$(git -C "$ROOT" rev-parse --short HEAD)" --arg base "$COMPARE" --argjson level "$level" '
        def pct($p): sort | if length == 0 then null else .[((length - 1) * $p / 100 | round)] end;
        def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        group_by(.target) | map({key: .[0].target, value: {
            revocations: (map(.latencies_ms) | add | length),
            p50_ms: (map(.latencies_ms) | add | pct(50)), p90_ms: (map(.latencies_ms) | add | pct(90)),
            p99_ms: (map(.latencies_ms) | add | pct(99)), max_ms: (map(.latencies_ms) | add | max),
            round_p50_ms: map(.p50_ms), round_p99_ms: map(.p99_ms),
            median_round_p99_ms: (map(.p99_ms) | median), crl_entries: (map(.crl_entries) | max),
            crl_bytes: (map(.crl_bytes) | max)}}) | from_entries
        | {head: $head, baseline: $base, seeded_revoked: $level} + .' "$WORK/revocation.jsonl" >"$OUT/revocation-only.json"
    jq -r 'to_entries[] | select(.value | type == "object") | "\(.key): \(.value.revocations) revocations, p50 \(.value.p50_ms*10|round/10) ms, p90 \(.value.p90_ms*10|round/10) ms, p99 \(.value.p99_ms*10|round/10) ms, max \(.value.max_ms*10|round/10) ms; per round p99 \(.value.round_p99_ms | map(.*10|round/10) | join(", ")) ms; CRL \(.value.crl_entries) entries, \(.value.crl_bytes) bytes"' \
        "$OUT/revocation-only.json"
    [ ${#FAILURES[@]} -eq 0 ] || die "${#FAILURES[@]} failures: ${FAILURES[*]}"
    log "results in $OUT/revocation-only.json"
    exit 0
fi

# --- With --compare: this checkout against a baseline commit, and nothing else -----------------

if [ -n "$COMPARE" ]; then
    BINARY[kca-baseline]=$BIN_DIR/kca-baseline
    for target in kca-pg kca-baseline; do
        create_database "$target" "$target"
        start_kca "$target" "$(pg_url "${DB[$target]}" tls)"
        setup_kca "$target" "$(pg_url "${DB[$target]}" tls)"
        check_target issue "$target" || die "issue on $target does not work"
        run_load issue "$target" 32 "$WARMUP"
    done
    log "kubeconfig issuance at c=32 over TLS to Postgres: $(git -C "$ROOT" rev-parse --short HEAD) (kca-pg) \
against $COMPARE (kca-baseline), $REPEATS alternating rounds of $DURATION s"
    for repeat in $(seq 1 "$REPEATS"); do
        for target in kca-pg kca-baseline; do run_load issue "$target" 32 "$DURATION" "$repeat"; done
    done
    jq -s --arg head "$(git -C "$ROOT" rev-parse --short HEAD)" --arg base "$COMPARE" '
        def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def side($t): map(select(.target == $t)) |
            {rps: (map(.rps) | median), server_cpu_us: (map(.server_cpu_ms_per_req * 1000) | median),
             db_cpu_us: (map(.db_cpu_ms_per_req * 1000) | median), p99_ms: (map(.p99_ms) | median),
             runs: length};
        {head: $head, baseline: $base, this: side("kca-pg"), base: side("kca-baseline")}
        | .server_cpu_ratio = (.this.server_cpu_us / .base.server_cpu_us)
        | .rps_ratio = (.this.rps / .base.rps)' "$WORK/runs.jsonl" >"$OUT/compare.json"
    jq -r '"kca CPU per kubeconfig (median): \(.this.server_cpu_us | floor) µs at \(.head), \(.base.server_cpu_us | floor) µs at \(.baseline): \(.server_cpu_ratio * 1000 | round / 1000)×",
        "throughput (median): \(.this.rps | floor)/s against \(.base.rps | floor)/s: \(.rps_ratio * 1000 | round / 1000)×",
        "Postgres CPU per kubeconfig: \(.this.db_cpu_us | floor) µs against \(.base.db_cpu_us | floor) µs"' "$OUT/compare.json"
    [ ${#FAILURES[@]} -eq 0 ] || die "${#FAILURES[@]} failures: ${FAILURES[*]}"
    exit 0
fi

# --- Start-up time and memory on SQLite (first start, then restarts of the same data) ----------

log "start-up on SQLite"
STARTUP=()
start_kca startup ""
STARTUP+=("{\"kind\":\"first\",\"ready_ms\":$READY_MS,\"rss_kb\":$(sleep 1; rss_kb "${PID[startup]}")}")
setup_kca startup ""
stop "${PID[startup]}"
for i in 1 2 3; do
    start_kca startup ""
    STARTUP+=("{\"kind\":\"restart\",\"ready_ms\":$READY_MS,\"rss_kb\":$(sleep 1; rss_kb "${PID[startup]}")}")
    stop "${PID[startup]}"
done
printf '%s\n' "${STARTUP[@]}" | jq -s . >"$WORK/startup.json"
log "ready (ms): $(jq -r 'map(.kind + " " + (.ready_ms|tostring)) | join(", ")' "$WORK/startup.json")"

# --- The servers under test ------------------------------------------------------------------

# How kca's connections to database $1 reach Postgres, as Postgres sees them: tls, tcp or unix.
pg_transport() {
    psql_db postgres "SELECT CASE WHEN count(*) = 0 THEN 'none' WHEN bool_and(a.client_addr IS NULL) THEN 'unix'
        WHEN bool_and(s.ssl) THEN 'tls' WHEN NOT bool_or(s.ssl) THEN 'tcp' ELSE 'mixed' END
        FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '$1' AND a.application_name = 'kca'"
}

declare -A TRANSPORT=([kca-pg]=tls [kca-pg-tcp]=tcp [kca-pg-unix]=unix)
declare -A SUFFIX=([kca-pg]=main [kca-pg-tcp]=tcp [kca-pg-unix]=unix)
for target in kca-pg kca-pg-tcp kca-pg-unix; do
    create_database "${SUFFIX[$target]}" "$target"
    start_kca "$target" "$(pg_url "${DB[$target]}" "${TRANSPORT[$target]}")"
    setup_kca "$target" "$(pg_url "${DB[$target]}" "${TRANSPORT[$target]}")"
    seen=$(pg_transport "${DB[$target]}")
    [ "$seen" = "${TRANSPORT[$target]}" ] || die "$target reaches Postgres by '$seen', not ${TRANSPORT[$target]}"
done
log "kca-pg reaches Postgres over TCP with TLS, kca-pg-tcp over TCP, kca-pg-unix over the unix socket"
start_kca kca-sqlite ""
setup_kca kca-sqlite ""

# kca-hsm: kca-pg's setting (Postgres over TLS), the bench cluster's CA keys in a SoftHSM2 token
# (generated there, signing there through PKCS#11).
SOFTHSM_MODULE=
for module in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -e "$module" ] && SOFTHSM_MODULE=$module && break
done
[ -n "$SOFTHSM_MODULE" ] || die "no SoftHSM2 module (Debian softhsm2)"
mkdir -p "$WORK/softhsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/softhsm/tokens" \
    >"$WORK/softhsm/softhsm2.conf"
HSM_PIN=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$HSM_PIN" >"$WORK/softhsm/pin"
SOFTHSM2_CONF=$WORK/softhsm/softhsm2.conf softhsm2-util --init-token --free --label kca-bench --pin "$HSM_PIN" \
    --so-pin "$HSM_PIN" >"$WORK/logs/softhsm-init.log" 2>&1 || die "softhsm2-util --init-token failed: $(cat "$WORK/logs/softhsm-init.log")"
EXTRA_ENV[kca-hsm]="SOFTHSM2_CONF=$WORK/softhsm/softhsm2.conf KCA_PKCS11_MODULE=$SOFTHSM_MODULE \
KCA_PKCS11_TOKEN_LABEL=kca-bench KCA_PKCS11_PIN_FILE=$WORK/softhsm/pin"
CLUSTER_FIELDS[kca-hsm]=',"key_storage":"pkcs11"'
create_database hsm kca-hsm
start_kca kca-hsm "$(pg_url "${DB[kca-hsm]}" tls)"
setup_kca kca-hsm "$(pg_url "${DB[kca-hsm]}" tls)"
[ "$(jq -r .key_storage "$WORK/logs/kca-hsm-cluster.json")" = pkcs11 ] || die "the kca-hsm bench cluster's keys are not in the token"

cfssl_config() {
    mkdir -p "$WORK/cfssl"
    cat >"$WORK/cfssl/ca-csr.json" <<'EOF'
{"CN":"kca-bench cfssl CA","key":{"algo":"ecdsa","size":256},"names":[{"O":"bench"}]}
EOF
    (cd "$WORK/cfssl" && cfssl gencert -initca ca-csr.json 2>/dev/null | cfssljson -bare ca) \
        || die "cfssl gencert -initca failed"
    # The kca user profile: clientAuth only, digitalSignature, one hour (kca's default TTL).
    cat >"$WORK/cfssl/config.json" <<'EOF'
{"signing":{"default":{"expiry":"1h"},
 "profiles":{"client":{"usages":["signing","digital signature","client auth"],"expiry":"1h"}}}}
EOF
    # cfssl's certdb schema (certdb/sqlite/migrations/001_CreateCertificates.sql of this version).
    sqlite3 "$WORK/cfssl/certs.db" <<'EOF'
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);
CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier)
    REFERENCES certificates(serial_number, authority_key_identifier)
);
EOF
    echo "{\"driver\":\"sqlite3\",\"data_source\":\"$WORK/cfssl/certs.db\"}" >"$WORK/cfssl/db.json"
}

start_cfssl() {
    local name=$1 port; shift
    port=$(free_port)
    start "$name" cfssl serve -address 127.0.0.1 -port "$port" -ca "$WORK/cfssl/ca.pem" \
        -ca-key "$WORK/cfssl/ca-key.pem" -config "$WORK/cfssl/config.json" \
        -tls-cert "$WORK/tls-cert.pem" -tls-key "$WORK/tls-key.pem" "$@"
    PID[$name]=$LAST_PID
    URL[$name]=https://127.0.0.1:$port
    KIND[$name]=cfssl
    for _ in $(seq 1 100); do
        curl -s --max-time 1 --cacert "$CACERT" -o /dev/null "${URL[$name]}/api/v1/cfssl/scaninfo" && return
        sleep 0.1
    done
    die "cfssl $name did not start: $(tail -5 "$WORK/logs/$name.log")"
}

cfssl_config
start_cfssl cfssl
start_cfssl cfssl-db -db-config "$WORK/cfssl/db.json"

: >"$WORK/runs.jsonl"
TARGETS=(kca-pg kca-sqlite cfssl cfssl-db)
# At c = 32, kca on Postgres also over plain TCP and over the unix socket, and with its CA keys
# in a SoftHSM2 token, next to kca-pg.
TARGETS_C32=(kca-pg kca-pg-tcp kca-pg-unix kca-hsm kca-sqlite cfssl cfssl-db)
KCA_TARGETS=(kca-pg kca-sqlite)

IDLE=()
for target in "${KCA_TARGETS[@]}"; do
    IDLE+=("{\"target\":\"$target\",\"when\":\"before load\",\"rss_kb\":$(rss_kb "${PID[$target]}")}")
done

log "checking every target answers"
for target in "${TARGETS_C32[@]}"; do
    check_target issue "$target" || true
    check_target csr "$target" || true
done
for target in "${KCA_TARGETS[@]}"; do check_target crl "$target" || true; check_target crl304 "$target" || true; done
[ ${#FAILURES[@]} -eq 0 ] || die "a target does not answer as expected: ${FAILURES[*]}"

log "warming up"
for target in "${TARGETS_C32[@]}"; do run_load issue "$target" 8 "$WARMUP"; done

CEILING=()
for repeat in $(seq 1 "$REPEATS"); do
    log "round $repeat of $REPEATS"
    for conc in "${CONCURRENCIES[@]}"; do
        if [ "$conc" = 32 ]; then targets=("${TARGETS_C32[@]}"); else targets=("${TARGETS[@]}"); fi
        for target in "${targets[@]}"; do run_load issue "$target" "$conc" "$DURATION" "$repeat"; done
    done
    for target in "${TARGETS[@]}"; do run_load csr "$target" 32 "$DURATION" "$repeat"; done
    for target in "${KCA_TARGETS[@]}"; do
        run_load crl "$target" 32 "$DURATION" "$repeat"
        run_load crl304 "$target" 32 "$DURATION" "$repeat"
    done
    for mode in generate csr; do
        args=(ceiling --threads 2 --seconds "$CEILING_SECONDS")
        [ "$mode" = csr ] && args+=(--csr "$WORK/user.csr")
        if result=$("$KCA_BENCH" "${args[@]}"); then
            CEILING+=("$(jq -c --argjson repeat "$repeat" '. + {repeat: $repeat}' <<<"$result")")
            log "ceiling $mode: $(jq -r '.per_second|floor' <<<"$result") certificates/s on 2 threads"
        else
            fail "kca-bench ceiling $mode failed"
        fi
    done
done
printf '%s\n' "${CEILING[@]}" | jq -s . >"$WORK/ceiling.json"

for target in "${KCA_TARGETS[@]}"; do
    IDLE+=("{\"target\":\"$target\",\"when\":\"after load\",\"rss_kb\":$(sleep 1; rss_kb "${PID[$target]}")}")
done
printf '%s\n' "${IDLE[@]}" | jq -s . >"$WORK/idle.json"

# --- Profile of kca under issuance load ------------------------------------------------------

if [ "$PERF" = 1 ] && command -v perf >/dev/null && perf record -q -e cpu-clock -o "$WORK/perf.check" true >/dev/null 2>&1; then
    log "profiling kca-pg under issuance load (perf, cpu-clock)"
    # Whole machine, flat: where the two cores go.
    perf record -q -e cpu-clock -F 999 -a -o "$WORK/perf-all.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
    run_load issue kca-pg 32 "$DURATION"
    wait "$perf_pid" || true
    # kca alone, with call stacks (DWARF unwinding), to attribute time to what kca does.
    perf record -q -e cpu-clock -F 499 -p "${PID[kca-pg]}" --call-graph dwarf,16384 -o "$WORK/perf-kca.data" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
    run_load issue kca-pg 32 "$DURATION"
    wait "$perf_pid" || true
    {
        echo "# CPU by process, whole machine, during $DURATION s of kubeconfig issuance at c=32 on kca-pg"
        perf report -i "$WORK/perf-all.data" --stdio --no-children --sort comm 2>/dev/null | grep -v '^$' | grep -v '^#' \
            | head -12 | sed -E 's/[[:space:]]+$//'
        echo
        echo "# kca by shared object (% of all samples)"
        perf report -i "$WORK/perf-all.data" --stdio --no-children --pid "${PID[kca-pg]}" --sort dso 2>/dev/null \
            | grep -v '^$' | grep -v '^#' | head -8 | sed -E 's/[[:space:]]+$//'
        echo
        echo "# kca: where its CPU goes (inclusive share of kca's samples, from call stacks)"
        perf script -i "$WORK/perf-kca.data" -F ip,sym 2>/dev/null | awk -f "$BENCH/perf-summary.awk"
        echo
        echo "# kca: its CPU per kubeconfig in parts that add up to 100% (each sample to the innermost frame"
        echo "# that names a part), scaled to kca's median CPU per kubeconfig in the measured runs"
        perf script -i "$WORK/perf-kca.data" -F ip,sym 2>/dev/null | awk -v us_per_request="$(jq -s '
            [.[] | select(.scenario == "issue" and .target == "kca-pg" and .concurrency == 32) | .server_cpu_ms_per_req]
            | sort | if length > 0 then .[length / 2 | floor] * 1000 else 0 end' "$WORK/runs.jsonl")" \
            -f "$BENCH/perf-split.awk"
        echo "# Postgres per kubeconfig (median, its backends and writers): $(jq -s '
            [.[] | select(.scenario == "issue" and .target == "kca-pg" and .concurrency == 32) | .db_cpu_ms_per_req]
            | sort | if length > 0 then .[length / 2 | floor] * 1000 | round else "-" end' "$WORK/runs.jsonl") us"
        echo
        echo "# Postgres: top functions by self time (% of all samples)"
        perf report -i "$WORK/perf-all.data" --stdio --no-children --comm postgres --sort symbol 2>/dev/null \
            | grep -v '^$' | grep -v '^#' | head -15 | sed -E 's/[[:space:]]+$//' | cut -c1-140
        echo
        echo "# kca: top functions by self time (% of all samples)"
        perf report -i "$WORK/perf-all.data" --stdio --no-children --pid "${PID[kca-pg]}" --sort symbol 2>/dev/null \
            | grep -v '^$' | grep -v '^#' | head -30 | sed -E 's/[[:space:]]+-?[[:space:]]+-?[[:space:]]*$//' | cut -c1-140
    } >"$OUT/perf-kca-issuance.txt" || true
    log "profile summary in $OUT/perf-kca-issuance.txt"
elif [ "$PERF" = 1 ]; then
    log "perf is missing or cannot record here: no profile (apt-get install linux-perf)"
fi

# --- Revocation latency with 0 / 10,000 / 100,000 revoked entries (kca on Postgres) ------------

REVOCATION=()
seeded=0
for level in "${REVOKED_LEVELS[@]}"; do
    if [ "$level" -gt "$seeded" ]; then
        log "seeding $((level - seeded)) revoked certificates"
        seed_certificates "${DB[kca-pg]}" $((seeded + 1)) "$level" 1
        seeded=$level
    fi
    log "revocation latency with $level seeded revoked entries ($REVOKE_COUNT revocations)"
    if result=$(KCA_BENCH_TOKEN=${TOKEN[kca-pg]} "$KCA_BENCH" revoke --url "${URL[kca-pg]}" --cacert "$CACERT" \
        --cluster bench --count "$REVOKE_COUNT" --user-prefix "revoke-$level"); then
        REVOCATION+=("$(jq -c --argjson level "$level" '. + {seeded_revoked: $level} | del(.latencies_ms)' <<<"$result")")
        log "$(jq -r '"p50 \(.p50_ms|.*10|floor/10) ms, p99 \(.p99_ms|.*10|floor/10) ms, CRL \(.crl_entries) entries, \(.crl_bytes) bytes"' <<<"$result")"
    else
        fail "revocation latency with $level revoked entries"
    fi
done
printf '%s\n' "${REVOCATION[@]}" | jq -s . >"$WORK/revocation.json"

# The same CRL downloads as above, now that the CRL lists every seeded entry.
log "CRL fetch with ${REVOKED_LEVELS[-1]} revoked entries"
run_load crl_large kca-pg 32 "$DURATION" 1
run_load crl304_large kca-pg 32 "$DURATION" 1

# --- Revoking every certificate of a user who holds many (kca on Postgres) -----------------------

# seed_user_certificates DB USER INDEX COUNT: COUNT live certificates of USER in the bench
# cluster's operators CA (unique serials 7C<index><n>, expiring in an hour).
seed_user_certificates() {
    local db=$1 user=$2 index=$3 count=$4
    psql_db "$db" "
        INSERT INTO certificates (serial, cluster_id, authority_id, kind, generation, profile, common_name,
            groups, dns_names, ip_addresses, not_before, not_after, fingerprint, certificate_der, issued_by,
            created_at)
        SELECT '7C' || lpad(to_hex($index), 4, '0') || upper(lpad(to_hex(g), 26, '0')), a.cluster_id, a.id,
            'operators', a.generation, 'user', '$user', '[\"g\"]', '[]', '[]', now() - interval '5 minutes',
            now() + interval '1 hour', 'seed', decode(repeat('5eed', 300), 'hex'), 'bench-seed', now()
        FROM ($OPERATORS_SQL) a, generate_series(1, $count) g;" || die "seeding $user in $db failed"
}

log "seeding $BULK_USERS users holding $BULK_CERTIFICATES certificates each"
bulk_users=()
for i in $(seq 1 "$BULK_USERS"); do
    seed_user_certificates "${DB[kca-pg]}" "bulk-$i" "$i" "$BULK_CERTIFICATES"
    bulk_users+=(--user "bulk-$i")
done
psql_db "${DB[kca-pg]}" "VACUUM (ANALYZE) certificates" || die "vacuuming ${DB[kca-pg]} failed"
psql_db "${DB[kca-pg]}" "CHECKPOINT" || true
log "revoke-user: $BULK_USERS users, one call each, on top of the CRL above"
if result=$(KCA_BENCH_TOKEN=${TOKEN[kca-pg]} "$KCA_BENCH" revoke-users --url "${URL[kca-pg]}" --cacert "$CACERT" \
    --cluster bench --expect "$BULK_CERTIFICATES" "${bulk_users[@]}"); then
    echo "$result" >"$WORK/revoke-users.json"
    log "$(jq -r '"p50 \(.p50_ms|floor) ms, max \(.max_ms|floor) ms; CRL \(.crl_entries) entries"' <<<"$result")"
else
    fail "revoke-user with $BULK_CERTIFICATES certificates"
    echo null >"$WORK/revoke-users.json"
fi

# --- Issuance with many stored certificates vs an empty database ------------------------------

create_database empty kca-empty
create_database stored kca-1m
for target in kca-empty kca-1m; do
    start_kca "$target" "$(pg_url "${DB[$target]}" tls)"
    setup_kca "$target" "$(pg_url "${DB[$target]}" tls)"
done
log "seeding $STORED_SEED stored certificates"
seed_started=$(date +%s)
seed_certificates "${DB[kca-1m]}" 1 "$STORED_SEED" 0
SEED_SECONDS=$(( $(date +%s) - seed_started ))
psql_db "${DB[kca-empty]}" "VACUUM (ANALYZE) certificates" >/dev/null
log "seeded in $SEED_SECONDS s"
for target in kca-empty kca-1m; do check_target issue "$target" || true; run_load issue "$target" 8 "$WARMUP"; done
for repeat in $(seq 1 "$REPEATS"); do
    for target in kca-empty kca-1m; do run_load issue "$target" 32 "$DURATION" "$repeat"; done
done

# --- Start-up with the stored certificates and many revoked ---------------------------------

hwm_kb() { # VmHWM (peak resident memory) of a process
    local key value rest
    while read -r key value rest; do
        [ "$key" = "VmHWM:" ] && { echo "$value"; return; }
    done 2>/dev/null <"/proc/$1/status"
    echo 0
}

stop "${PID[kca-empty]}"
log "seeding $STORED_REVOKED revoked certificates next to the $STORED_SEED stored ones"
seed_certificates "${DB[kca-1m]}" 1 "$STORED_REVOKED" 1
# One revocation through the API publishes the CRL that lists them all.
KCA_BENCH_TOKEN=${TOKEN[kca-1m]} "$KCA_BENCH" revoke --url "${URL[kca-1m]}" --cacert "$CACERT" --cluster bench \
    --count 1 --user-prefix startup >/dev/null || fail "publishing the CRL of kca-1m"
stop "${PID[kca-1m]}"
STARTUP_LARGE=()
for i in $(seq 1 "$RESTARTS"); do
    start_kca kca-1m "$(pg_url "${DB[kca-1m]}" tls)"
    # The peak includes the first background re-read of clusters and CRLs, which starts at once.
    sleep 2
    STARTUP_LARGE+=("{\"ready_ms\":$READY_MS,\"hwm_kb\":$(hwm_kb "${PID[kca-1m]}"),\"rss_kb\":$(rss_kb "${PID[kca-1m]}")}")
    stop "${PID[kca-1m]}"
done
printf '%s\n' "${STARTUP_LARGE[@]}" | jq -s --argjson crl "$(psql_db "${DB[kca-1m]}" "SELECT max(entries) FROM crls")" \
    '{restarts: ., crl_entries: $crl}' >"$WORK/startup-large.json"
log "start-up with $STORED_SEED stored and $STORED_REVOKED revoked: $(jq -r '[.restarts[] | "\(.ready_ms|floor) ms, \(.hwm_kb/1024|floor) MiB"] | join("; ")' "$WORK/startup-large.json")"

# --- Results ---------------------------------------------------------------------------------

BINARY_BYTES=$(stat -c %s "$KCA")
git_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git_dirty=$(git -C "$ROOT" status --porcelain -- src migrations Cargo.toml Cargo.lock 2>/dev/null | wc -l)
jq -n \
    --slurpfile runs <(jq -s . "$WORK/runs.jsonl") \
    --slurpfile ceiling "$WORK/ceiling.json" \
    --slurpfile revocation "$WORK/revocation.json" \
    --slurpfile startup "$WORK/startup.json" \
    --slurpfile idle "$WORK/idle.json" \
    --slurpfile revoke_users "$WORK/revoke-users.json" \
    --slurpfile startup_large "$WORK/startup-large.json" \
    --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --arg cpu "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" \
    --argjson cores "$(nproc)" \
    --arg kernel "$(uname -r)" \
    --arg rustc "$(rustc --version)" \
    --arg commit "$git_commit" --argjson dirty "$git_dirty" \
    --arg profile "$PROFILE" \
    --arg postgres "$(psql "${PG_ADMIN[@]}" -Atc 'SHOW server_version')" \
    --arg sqlite "$(sqlite3 --version | cut -d' ' -f1)" \
    --arg cfssl "$(cfssl version 2>/dev/null | awk '/^Version/{print $2}') ($(dpkg-query -W -f='${Version}' golang-cfssl 2>/dev/null || echo '?'))" \
    --arg wrk "$(wrk -v 2>&1 | head -1 | cut -d' ' -f2)" \
    --argjson smoke "$SMOKE" --argjson duration "$DURATION" --argjson repeats "$REPEATS" \
    --argjson binary "$BINARY_BYTES" --argjson seeded "$STORED_SEED" --argjson seed_seconds "$SEED_SECONDS" \
    --argjson seeded_revoked "$STORED_REVOKED" \
    --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
    -f "$BENCH/summarize.jq" >"$OUT/results.json"

jq -r -f "$BENCH/table.jq" "$OUT/results.json" | tee "$OUT/table.txt"

# In a smoke run the numbers mean nothing, but every step must have produced them.
jq -e '[.summary.issue[], .summary.csr[], .summary.crl[]] | length > 0' "$OUT/results.json" >/dev/null \
    || fail "the summary is empty"
[ "$(jq '.revocation | length' "$OUT/results.json")" = "${#REVOKED_LEVELS[@]}" ] || fail "revocation results are missing"

if [ ${#FAILURES[@]} -gt 0 ]; then
    log "${#FAILURES[@]} failure(s):"
    printf '  - %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
log "results in $OUT/results.json"
