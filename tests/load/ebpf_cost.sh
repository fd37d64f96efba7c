#!/usr/bin/env bash
# Cost of the eBPF kernel stats: pgbench -S through the release pooler with ebpf on and off,
# interleaved (on, off, on, off, ...) because only ratios taken in one run mean anything on
# a shared machine. Reports tps, the pooler's CPU (utime+stime) per transaction, and the CPU
# of pooler + PostgreSQL + pgbench per transaction (eBPF programs run in softirq context,
# which the kernel charges to whichever task is on the CPU: often the sender, not the pooler).
# A last "stats" run (ebpf on, kernel.bpf_stats_enabled=1, which adds its own timing cost)
# reads the programs' exact run time from bpftool: the figure noise cannot blur.
#
# Usage (as root, from the repository root): tests/load/ebpf_cost.sh [ROUNDS] [SECONDS]
#   EXTRA="ebpf_rtt_samples = true" tests/load/ebpf_cost.sh   # extra [pooler] keys for "on"
set -euo pipefail

ROUNDS=${1:-3}
SECS=${2:-20}
CLIENTS=${CLIENTS:-500}
THREADS=${THREADS:-8}
EXTRA=${EXTRA:-}
PG_BIN=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}

cargo build --release -q -p pooler
BIN=$PWD/target/release/pooler
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/ebpf-cost-XXXXXX)
chmod 755 "$WORK"
PG_DATA=$WORK/pg
PG_PORT=$((20000 + RANDOM % 10000))
POOLER_PORT=$((PG_PORT + 1))
cleanup() {
    # run() executes in a pipeline's subshell: its pooler's pid is in a file.
    [ -f "$WORK/pooler.pid" ] && kill -QUIT "$(cat "$WORK/pooler.pid")" 2>/dev/null || true
    su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir "$PG_DATA" && chown postgres "$PG_DATA"
su postgres -c "$PG_BIN/initdb -D $PG_DATA -A trust -U postgres" >/dev/null
su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -l $PG_DATA/log -w start \
    -o '-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1 -c fsync=off \
        -c synchronous_commit=off -c max_connections=200 -c shared_buffers=256MB'" >/dev/null
pgbench -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

PM=$(head -1 "$PG_DATA/postmaster.pid")
# Clock ticks of PostgreSQL: the postmaster, its reaped children and its live ones.
pg_ticks() {
    local t
    t=$(awk '{print $14 + $15 + $16 + $17}' /proc/"$PM"/stat)
    for c in $(pgrep -P "$PM"); do
        t=$((t + $(awk '{print $14 + $15}' /proc/"$c"/stat 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# "run_time_ns run_cnt" summed over the programs pid $1 holds open (their ids are in the
# fdinfo of its descriptors; bpftool prints the counters on each program's first line).
prog_stats() {
    local t=0 c=0 id line
    for id in $(awk '/^prog_id:/ {print $2}' /proc/"$1"/fdinfo/* 2>/dev/null | sort -u); do
        line=$(bpftool prog show id "$id" | awk 'NR == 1')
        t=$((t + $(awk '{v = 0; for (i = 1; i < NF; i++) if ($i == "run_time_ns") v = $(i + 1); print v}' <<<"$line")))
        c=$((c + $(awk '{v = 0; for (i = 1; i < NF; i++) if ($i == "run_cnt") v = $(i + 1); print v}' <<<"$line")))
    done
    echo "$t $c"
}

# $1 = on|off|stats: starts the pooler, runs pgbench, prints
# "mode tps txns pooler_cpu_us_per_txn total_cpu_us_per_txn".
run() {
    local mode=$1 conf=$WORK/pooler-$1.toml extra=""
    [ "$mode" != off ] && extra=$EXTRA
    cat >"$conf" <<EOF
[pooler]
listen_addr = "127.0.0.1"
listen_port = $POOLER_PORT
unix_socket_dir = ""
pool_mode = "transaction"
auth_type = "trust"
max_client_conn = 1000
default_pool_size = 50
log_connections = false
log_disconnections = false
ebpf = "$([ "$mode" = off ] && echo off || echo on)"
$extra

[databases]
"*" = { host = "127.0.0.1", port = $PG_PORT }
EOF
    # Not on our stdout: a pooler left behind must not hold the pipe to `tee` open.
    "$BIN" -c "$conf" >/dev/null 2>"$WORK/pooler-$mode.log" &
    POOLER_PID=$!
    echo "$POOLER_PID" >"$WORK/pooler.pid"
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$POOLER_PORT) 2>/dev/null && break
        sleep 0.1
    done
    local ticks0 ticks1 pg0 pg1 bench out tps txns
    ticks0=$(awk '{print $14 + $15}' /proc/$POOLER_PID/stat)
    pg0=$(pg_ticks)
    # pgbench's own CPU, from the shell's `time` (user and system seconds).
    out=$( { TIMEFORMAT='pgbench_cpu %U %S'; time pgbench -h 127.0.0.1 -p "$POOLER_PORT" \
        -U postgres -n -S -c "$CLIENTS" -j "$THREADS" -T "$SECS" postgres; } 2>&1)
    ticks1=$(awk '{print $14 + $15}' /proc/$POOLER_PID/stat)
    [ "$mode" = stats ] && prog_stats "$POOLER_PID" >"$WORK/prog_stats"
    kill -QUIT "$POOLER_PID"
    wait "$POOLER_PID" 2>/dev/null || true
    POOLER_PID=
    # Backends exit when the pooler goes; once reaped their CPU is in the postmaster's.
    for _ in $(seq 50); do
        pgrep -P "$PM" -f "postgres: postgres postgres" >/dev/null || break
        sleep 0.1
    done
    pg1=$(pg_ticks)
    bench=$(awk '/^pgbench_cpu/ {print $2 + $3}' <<<"$out")
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    awk -v m="$mode" -v tps="$tps" -v n="$txns" -v t=$((ticks1 - ticks0)) \
        -v pg=$((pg1 - pg0)) -v bench="$bench" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%-4s %10.0f %9d %10.2f %10.2f\n", m, tps, n, t * 1e6 / hz / n,
                 ((t + pg) / hz + bench) * 1e6 / n }'
}

echo "mode        tps      txns pooler_us  total_us   per txn (pgbench -S -c $CLIENTS -j $THREADS -T $SECS)"
RESULTS=$WORK/results
for round in $(seq "$ROUNDS"); do
    run on | tee -a "$RESULTS"
    run off | tee -a "$RESULTS"
done
if command -v bpftool >/dev/null; then
    old_stats=$(sysctl -n kernel.bpf_stats_enabled)
    sysctl -qw kernel.bpf_stats_enabled=1
    run stats | tee "$WORK/stats_run"
    sysctl -qw kernel.bpf_stats_enabled="$old_stats"
    read -r ns cnt <"$WORK/prog_stats"
    awk -v ns="$ns" -v cnt="$cnt" -v n="$(awk '{print $3}' "$WORK/stats_run")" 'BEGIN {
        printf "eBPF programs: %.2f runs and %.2f us per txn (%.0f ns per run)\n",
               cnt / n, ns / n / 1000, cnt ? ns / cnt : 0 }'
fi
# Medians per mode, and on/off ratios.
awk '
    { tps[$1] = tps[$1] " " $2; cpu[$1] = cpu[$1] " " $4; all[$1] = all[$1] " " $5 }
    function median(list,   a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
        ton = median(tps["on"]); toff = median(tps["off"])
        con = median(cpu["on"]); coff = median(cpu["off"])
        aon = median(all["on"]); aoff = median(all["off"])
        printf "median on:  %.0f tps, pooler %.2f us/txn, total %.2f us/txn\n", ton, con, aon
        printf "median off: %.0f tps, pooler %.2f us/txn, total %.2f us/txn\n", toff, coff, aoff
        printf "on/off: tps %.3f, pooler cpu/txn %.3f, total cpu/txn %.3f\n", ton / toff, con / coff, aon / aoff
    }' "$RESULTS"
