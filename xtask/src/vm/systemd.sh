#!/bin/sh
# The systemd guest of `cargo xtask vm-test`: PID 1 is Debian's systemd, and this script
# runs as a oneshot service once the system is up. It installs sockscope's unit exactly
# as README "As a service" says (its commands, taken from README by xtask, are
# /root/src/install.sh, run in a tree shaped like the repository), with one marked
# process started before `systemctl enable --now sockscope` and one after, and checks
# what a user would: the service is active, the findings file, the metrics page,
# logrotate's reload, a clean stop, nothing left in the kernel.
#
# One `VMTEST LABEL systemd CHECK pass|fail DETAIL` line per check and the two metrics
# pages (which the host parses with a Prometheus parser) go to the second serial port,
# /dev/ttyS1, which the host reads as a file; what happens here goes to the journal and
# the console.
K=$(uname -r)
OUT=/dev/ttyS1
stty -F "$OUT" raw -echo 2>/dev/null
exec 3>"$OUT"
T=/root/vmtest-work
mkdir -p "$T"
cd "$T" || exit 1
FINDINGS=/var/log/sockscope/findings.jsonl
# How long pc_sim keeps a leaked socket after its PeerConnection closed: longer than
# the unit's --grace (5s), or the socket is merely released late, not leaked.
LINGER=7000

say() { echo "VMTEST $K systemd $1 $2 $3" >&3; echo "VMTEST $K systemd $1 $2 $3"; }
check() { if [ "$2" = "$3" ]; then say "$1" pass "$2"; else say "$1" fail "got=$2 want=$3"; fi; }
# A number after "KEY": in a JSON line on stdin (first one).
num() { grep -o "\"$1\":[0-9]*" | head -n 1 | cut -d: -f2; }
# Waits until FILE ($1) has a line matching every extended regex after the number of
# seconds ($2) to wait at most; prints it.
wait_line() {
    file=$1
    secs=$2
    shift 2
    # By the clock: under TCG each round takes longer than its sleep.
    end=$(($(date +%s) + secs))
    while [ "$(date +%s)" -lt $end ]; do
        line=$(cat "$file" 2>/dev/null)
        for re in "$@"; do
            line=$(echo "$line" | grep -E "$re")
        done
        if [ -n "$line" ]; then
            echo "$line" | head -n 1
            return 0
        fi
        sleep 0.2
    done
    return 1
}
# pc_sim's leaked "pc_id:port" pairs from its JSON lines, sorted, one line.
sim_leaks() {
    grep '"leaked_ports":\[[0-9]' "$1" | while read -r l; do
        pc=$(echo "$l" | num pc_id)
        echo "$l" | sed 's/.*"leaked_ports":\[\([0-9,]*\)\].*/\1/' | tr , '\n' | sed "s/^/$pc:/"
    done | sort | tr '\n' ' '
}
# The daemon's leak records of pid $2 in file $1 as "pc_id:local_port", sorted, one line.
found_leaks() {
    grep '"event":"leak"' "$1" 2>/dev/null | grep -E "\"pid\":$2[,}]" | while read -r l; do
        echo "$(echo "$l" | num pc_id):$(echo "$l" | num local_port)"
    done | sort | tr '\n' ' '
}
# sockscope's BPF programs loaded now (bpftool, independent of sockscope).
programs() { bpftool prog show 2>/dev/null | grep -c ' name sockscope_'; }
# A marked process paused on stdin: fifo $1, output $2, then pc_sim's arguments.
start_sim() {
    fifo=$1
    out=$2
    shift 2
    rm -f "$fifo"
    mkfifo "$fifo"
    "$@" < "$fifo" > "$out" 2>&1 &
}

# What the service did, the findings and the metrics pages (for the host), the end
# marker, and power off. Called at the end, or as soon as the service is not up (the
# checks after that would only wait out their time limits).
finish() {
    journalctl -u sockscope -o short-monotonic --no-pager | tail -n 40
    for f in "$FINDINGS.1" "$FINDINGS"; do
        echo "== $f"
        cut -c 1-300 "$f"
    done
    for n in 1 2; do
        echo "VMTEST-METRICS-BEGIN $n" >&3
        cat "metrics-$n.txt" >&3
        echo "VMTEST-METRICS-END $n" >&3
    done
    echo "VMTEST-END $K" >&3
    # Closing a serial tty waits until its output is sent.
    exec 3>&-
    echo "sockscope vm-test: done, powering off"
    # At once (the file systems are in RAM): a clean poweroff hung here under TCG.
    systemctl poweroff -ff
    exit 0
}

echo "sockscope vm-test: systemd $(systemctl --version | head -n 1), kernel $K"
# Up: running, or degraded (a unit of the minimal system failed; listed below).
state=$(systemctl is-system-running --wait 2>/dev/null)
systemctl --failed --no-pager
case $state in
running | degraded) say boot_state pass "$state" ;;
*) say boot_state fail "got=$state want=running" ;;
esac

# A: started before the service, paused with PeerConnection 1 open (then 2 leaks).
start_sim a.in a.out /root/src/target/release/pc_sim --pcs 2 --leak 2 --pause-after-open 1 --linger $LINGER
exec 4>a.in
A=$(wait_line a.out 30 '"paused"'  | num pid)
check before_started "${A:+yes}" yes

# README's commands, as written there.
(cd /root/src && sh -ex ./install.sh) > install.log 2>&1
rc=$?
cat install.log
check readme_install "$rc" 0
check is_enabled "$(systemctl is-enabled sockscope 2>&1)" enabled
check is_active "$(systemctl is-active sockscope 2>&1)" active
MAIN=$(systemctl show -p MainPID --value sockscope)
# The unit's ExecStartPre ran doctor, which said what it found.
check doctor_ran "$(journalctl -u sockscope -o cat --no-pager | grep -c '^ok   backend  ')" 1

# The daemon found A by itself (running before it).
line=$(wait_line "$FINDINGS" 90 '"state":"found"' "\"host_pid\":$A[,}]")
check found_before "${line:+found}" found
[ -n "$line" ] || finish
# The page is rebuilt every second.
sleep 2
code=$(curl -s -o metrics-1.txt -w '%{http_code}' http://127.0.0.1:9464/metrics)
check metrics_http_1 "$code" 200
echo go >&4
exec 4>&-

# B: started after the service, from /tmp (the unit has PrivateTmp: the daemon reads it
# through /proc/PID/root); waits until the daemon found it, as a server would take
# longer than that before its first PeerConnection.
cp /root/src/target/release/pc_sim /tmp/pc_sim_after
start_sim b.in b.out /tmp/pc_sim_after --wait --pcs 3 --leak 2 --linger $LINGER
exec 5>b.in
B=$(wait_line b.out 30 '"ready"'  | num pid)
line=$(wait_line "$FINDINGS" 60 '"state":"found"' "\"host_pid\":$B[,}]")
check found_after "${line:+found}" found
echo go >&5
exec 5>&-
wait
cat a.out b.out
# B's leak is released as it exits: its late record comes last.
wait_line "$FINDINGS" 60 '"event":"late"' "\"pid\":$B[,}]" > /dev/null
want=$(sim_leaks b.out)
check after_leaks "$(found_leaks "$FINDINGS" "$B")" "${want:-pc_sim-reported-no-leak}"
check after_leak_count "$(echo $want | wc -w)" 1
want=$(sim_leaks a.out)
check before_leaks "$(found_leaks "$FINDINGS" "$A")" "${want:-pc_sim-reported-no-leak}"
v=$(grep '"event":"verdict"' "$FINDINGS" | grep -E "\"pid\":$A[,}]" | grep '"pc_id":1[,}]')
check before_incomplete \
    "$(echo "$v" | grep -o '"outcome":"[a-z]*"\|"reason":"[a-z_]*"' | cut -d'"' -f4 | tr '\n' ' ')" \
    "incomplete opened_before_attach "
sleep 2
code=$(curl -s -o metrics-2.txt -w '%{http_code}' http://127.0.0.1:9464/metrics)
check metrics_http_2 "$code" 200
check programs_loaded "$([ "$(programs)" -gt 0 ] && echo yes)" yes

# logrotate, as installed: the file moves, postrotate runs `systemctl reload`, the
# daemon reopens its output; C's findings go to the new file.
logrotate -f /etc/logrotate.d/sockscope
check rotated "$([ -s "$FINDINGS.1" ] && grep -qE "\"pid\":$B[,}]" "$FINDINGS.1" && echo yes)" yes
i=0
while ! journalctl -u sockscope -o cat --no-pager | grep -q 'output reopened' && [ $i -lt 50 ]; do
    sleep 0.2
    i=$((i + 1))
done
check reload_reopened "$(journalctl -u sockscope -o cat --no-pager | grep -c 'output reopened')" 1
check reload_same_pid "$(systemctl show -p MainPID --value sockscope)" "$MAIN"
start_sim c.in c.out /root/src/target/release/pc_sim --wait --pcs 1 --leak 1 --linger $LINGER
exec 6>c.in
C=$(wait_line c.out 30 '"ready"'  | num pid)
wait_line "$FINDINGS" 60 '"state":"found"' "\"host_pid\":$C[,}]" > /dev/null
echo go >&6
exec 6>&-
wait
wait_line "$FINDINGS" 60 '"event":"late"' "\"pid\":$C[,}]" > /dev/null
want=$(sim_leaks c.out)
check reopened_leaks "$(found_leaks "$FINDINGS" "$C")" "${want:-pc_sim-reported-no-leak}"

# Stop: SIGTERM, a clean exit (status 0, not a death by the signal), nothing left.
# `systemctl stop` returns once its job is done, but a CI run under TCG once saw it
# return with the unit still deactivating (its bus call can give up first on a loaded
# host): the unit's own state is what counts, waited for up to TimeoutStopSec (15 s,
# after which systemd kills it and Result says so) and a margin.
t0=$(date +%s)
systemctl stop sockscope
rc=$?
end=$(($(date +%s) + 25))
while [ "$(systemctl is-active sockscope)" = deactivating ] && [ "$(date +%s)" -lt $end ]; do
    sleep 0.2
done
echo "sockscope vm-test: systemctl stop exited $rc; the unit left deactivating $(($(date +%s) - t0)) s after the stop began"
check stop_result "$(systemctl show -p Result --value sockscope)" success
check stop_exit "$(systemctl show -p ExecMainCode --value sockscope)/$(systemctl show -p ExecMainStatus --value sockscope)" 1/0
check stop_inactive "$(systemctl is-active sockscope)" inactive
i=0
while [ "$(programs)" -gt 0 ] && [ $i -lt 50 ]; do
    sleep 0.2
    i=$((i + 1))
done
check stop_nothing_left "$(programs)" 0
finish
