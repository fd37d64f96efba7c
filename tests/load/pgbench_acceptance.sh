#!/usr/bin/env bash
# Load acceptance: pgbench -i -s 10, then 500 clients for 30 s through HOST PORT; passes only with zero errors.
#
# Usage: tests/load/pgbench_acceptance.sh HOST PORT
# Environment: ACCEPT_DURATION (30), ACCEPT_PROTOCOL (simple|extended|prepared, default simple),
#   ACCEPT_CLIENTS (500), ACCEPT_JOBS (8), ACCEPT_SCALE (10), PGUSER (postgres), PGDATABASE (postgres),
#   PGPASSWORD if the target wants one.
# Exit: 0 no failed transaction and no connection error; 1 errors; 2 HOST:PORT unreachable;
#   3 a required tool (pgbench, psql) is missing.
set -u

usage() {
    echo "usage: $0 HOST PORT   (see the comments at the top of this script)" >&2
    exit 1
}

[ "$#" -eq 2 ] || usage
host=$1
port=$2
duration=${ACCEPT_DURATION:-30}
protocol=${ACCEPT_PROTOCOL:-simple}
clients=${ACCEPT_CLIENTS:-500}
jobs=${ACCEPT_JOBS:-8}
scale=${ACCEPT_SCALE:-10}
user=${PGUSER:-postgres}
database=${PGDATABASE:-postgres}

for tool in pgbench psql; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found in PATH (Debian: apt-get install postgresql-client-15)" >&2
        exit 3
    fi
done

for value in "$port" "$duration" "$clients" "$jobs" "$scale"; do
    case $value in
        '' | *[!0-9]*)
            echo "error: expected a number, got '$value'" >&2
            usage
            ;;
    esac
done

case $protocol in
    simple | extended) ;;
    prepared)
        if [ "$jobs" -lt "$clients" ]; then
            echo "warning: -M prepared with fewer threads than clients can stall behind a transaction pooler;" \
                "set ACCEPT_JOBS=$clients for a fair run" >&2
        fi
        ;;
    *)
        echo "error: ACCEPT_PROTOCOL must be simple, extended or prepared, not '$protocol'" >&2
        exit 1
        ;;
esac

# pgbench needs a file descriptor per client; raise the soft limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 4096 2>/dev/null || true

export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}
conn=(-h "$host" -p "$port" -U "$user")

# Reachability: pg_isready when installed, else a short psql.
if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q "${conn[@]}" -d "$database" -t 5
    rc=$?
    if [ "$rc" -ge 2 ]; then
        echo "error: $host:$port is not reachable (pg_isready exit $rc)" >&2
        exit 2
    fi
fi
if ! probe=$(psql -X -w -A -t -q "${conn[@]}" -d "$database" -c 'SELECT 1' 2>&1); then
    case $probe in
        *"could not connect"* | *"Connection refused"* | *"timeout expired"* | *"could not translate host"*)
            echo "error: $host:$port is not reachable: $probe" >&2
            exit 2
            ;;
    esac
    echo "error: $host:$port answers but SELECT 1 failed: $probe" >&2
    exit 1
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

echo "== pgbench -i -s $scale on $host:$port ($user@$database)"
if ! pgbench -i -q -s "$scale" "${conn[@]}" "$database" >"$workdir/init.log" 2>&1; then
    cat "$workdir/init.log"
    echo "error: pgbench -i failed" >&2
    exit 1
fi

echo "== pgbench -c $clients -j $jobs -T $duration -M $protocol"
pgbench -c "$clients" -j "$jobs" -T "$duration" -M "$protocol" "${conn[@]}" "$database" \
    >"$workdir/run.log" 2>&1
bench_rc=$?

field() {
    # The first number after "$1" on its line.
    sed -n "s/^$1\([0-9.]*\).*/\1/p" "$workdir/run.log" | head -n 1
}
tps=$(field 'tps = ')
latency=$(field 'latency average = ')
processed=$(field 'number of transactions actually processed: ')
failed=$(field 'number of failed transactions: ')
aborted=$(grep -c 'client [0-9]* aborted' "$workdir/run.log")
conn_errors=$(grep -c -E 'connection to server .* failed|could not connect|could not create connection' "$workdir/run.log")

printf '%-28s %s\n' \
    "tps:" "${tps:-n/a}" \
    "latency average (ms):" "${latency:-n/a}" \
    "transactions processed:" "${processed:-n/a}" \
    "failed transactions:" "${failed:-n/a}" \
    "clients aborted:" "$aborted" \
    "connection errors:" "$conn_errors" \
    "pgbench exit status:" "$bench_rc"

if [ "$bench_rc" -ne 0 ] || [ "${failed:-1}" != 0 ] || [ "$aborted" -ne 0 ] || [ "$conn_errors" -ne 0 ] \
    || [ -z "$processed" ] || [ "$processed" = 0 ]; then
    echo "--- pgbench output (last 40 lines) ---"
    tail -n 40 "$workdir/run.log"
    echo "FAIL: errors during the run"
    exit 1
fi
echo "PASS: no failed transaction, no connection error"
exit 0
