#!/usr/bin/env bash
# smtp_bench.sh - messages per second accepted by postern over SMTP, with
# 1 KiB messages and one connection per message (smtp-source from Debian's
# postfix package), at several concurrencies; and the fsyncs per message.
#
#   bench/smtp_bench.sh [BUILD_DIR] [MESSAGES] [RUNS] [CONCURRENCY...]
#   defaults: build 5000 3 1 20 100
#
# For each concurrency: RUNS timed runs (median reported; postern's CPU
# time per message, accepting and delivering, also as a median, a figure
# that other load on the machine disturbs less), each on a fresh
# postern (spool and maildir in a temp dir on the same disk as /tmp,
# delivering to maildir as it accepts); then one run under `strace -f -c`
# to count every fsync the gateway made (accepting and delivering). The
# commit-path count comes from postern's own event=spool_stats line.
# Everything it starts is stopped by PID; the temp dir is removed.
set -euo pipefail
build=${1:-build}
msgs=${2:-5000}
runs=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
concs=("$@")
[ ${#concs[@]} -gt 0 ] || concs=(1 20 100)
bin=$(realpath "$build/bin/postern")
command -v smtp-source >/dev/null || { echo "smtp-source missing (postfix)"; exit 1; }
tmp=$(mktemp -d /tmp/postern-bench-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
user_line=
if [ "$(id -u)" = 0 ]; then   # postern started as root needs an account to run as
    user_line='user = "postern";'
    chmod 755 "$tmp"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start() {   # $1: wrapper (empty or "strace ...")
    rm -rf "$tmp/spool" "$tmp/mail" "$tmp/log" "$tmp/strace"
    cat > "$tmp/p.conf" <<CONF
hostname = "bench.test";
$user_line
listeners = ( { address = "127.0.0.1"; port = $port; } );
relay = { trusted_networks = [ "127.0.0.1/32" ]; };
limits = { sessions = 1000; sessions_per_ip = 1000; };
queue = { directory = "$tmp/spool"; };
delivery = { default_route = "maildir:$tmp/mail"; };
logging = { level = "info"; };
CONF
    $1 "$bin" -c "$tmp/p.conf" 2> "$tmp/log" &
    pid=$!
    for _ in $(seq 600); do grep -q 'event=ready' "$tmp/log" 2>/dev/null && return; sleep 0.05; done
    echo "postern did not start"; cat "$tmp/log"; exit 1
}
cpu_ms() {  # user+system CPU of postern so far, in ms
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000 / hz}' "/proc/$pid/stat"
}
stop() {
    kill -TERM "$pid"; wait "$pid" || true; pid=
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf "%-12s %-10s %-28s %-12s %-18s %-18s\n" concurrency msgs/s "runs (msgs/s)" "cpu ms/msg" "commit fsync/msg" "all fsync/msg"
for c in "${concs[@]}"; do
    rates=()
    cpus=()
    for _ in $(seq "$runs"); do
        start ""
        t0=$(date +%s.%N)
        smtp-source -s "$c" -l 1024 -m "$msgs" -f bench@example.org -t rcpt@example.net "127.0.0.1:$port"
        t1=$(date +%s.%N)
        # let the queue drain so delivery's CPU is counted too
        for _ in $(seq 400); do [ -z "$(ls -A "$tmp/spool/active")" ] && break; sleep 0.05; done
        cpus+=("$(python3 -c "print('%.3f' % ($(cpu_ms) / $msgs))")")
        stop
        rates+=("$(python3 -c "print(round($msgs / ($t1 - $t0)))")")
        commit=$(grep -o 'event=spool_stats.*' "$tmp/log" | sed -E 's/.*committed=([0-9]+).*fsyncs=([0-9]+).*/\2 \1/' | awk '{printf "%.3f", $1/$2}')
    done
    n=$(( msgs < 2000 ? msgs : 2000 ))
    start "strace -f -c -e trace=fsync,fdatasync -o $tmp/strace"
    smtp-source -s "$c" -l 1024 -m "$n" -f bench@example.org -t rcpt@example.net "127.0.0.1:$port"
    # let the queue drain so delivery fsyncs are counted too
    for _ in $(seq 400); do [ -z "$(ls -A "$tmp/spool/active")" ] && break; sleep 0.05; done
    tpid=$(cat "/proc/$pid/task/$pid/children" | awk '{print $1}')
    kill -TERM "$tpid"; wait "$pid" || true; pid=
    all=$(awk '$NF=="fsync"||$NF=="fdatasync"{s+=$4} END{print s+0}' "$tmp/strace")
    printf "%-12s %-10s %-28s %-12s %-18s %-18s\n" "$c" "$(printf '%s\n' "${rates[@]}" | median)" "${rates[*]}" "$(printf '%s\n' "${cpus[@]}" | median)" "$commit" "$(python3 -c "print('%.2f' % ($all / $n))")"
done
