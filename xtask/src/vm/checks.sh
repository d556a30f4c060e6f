# sockscope end to end, for each backend: run by the vm-test guest's /init and by
# `cargo xtask vm-test` on the host. POSIX sh (busybox in the guest).
#
#   checks.sh LABEL AUTO WORKING... [-- REFUSED...]
#
# LABEL names the kernel in the output; AUTO is the backend `doctor` must pick; each
# WORKING backend must pass every check, each REFUSED one must be refused with exit 2
# and one clear line. Prints one `VMTEST LABEL BACKEND CHECK pass|fail DETAIL` line per
# check; the caller decides from those lines only.
K=$1
AUTO=$2
shift 2
WORKING=""
REFUSED=""
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
        shift
        REFUSED="$*"
        break
    fi
    WORKING="$WORKING $1"
    shift
done
T=${TMPDIR:-/tmp}/sockscope-checks.$$
mkdir -p "$T"

say() { echo "VMTEST $K $1 $2 $3 $4"; }
check() { if [ "$3" = "$4" ]; then say "$1" "$2" pass "$3"; else say "$1" "$2" fail "got=$3 want=$4"; fi; }

sockscope doctor > "$T/doctor.txt" 2>&1
check auto doctor "$?" 0
cat "$T/doctor.txt"
chosen=$(grep '^ok   backend  ' "$T/doctor.txt" | awk '{print $3}' | tr -d ':')
check auto doctor_choice "$chosen" "$AUTO"

for B in $WORKING; do
    # trace: the workload's sockets created, bound and released (at its exit), each
    # release paired with its create, with the releasing stack where the backend
    # takes it. The log is emptied first: the wait below must not find the previous
    # backend's start line (the background shell may not have truncated it yet).
    : > "$T/trace.err"
    sockscope trace --backend "$B" --stacks --format json --comm udp_workload --duration 30s \
        -o "$T/trace.json" 2> "$T/trace.err" &
    tracer=$!
    i=0
    while ! grep -q "tracing UDP sockets" "$T/trace.err" && [ $i -lt 300 ]; do
        sleep 0.2
        i=$((i + 1))
    done
    # It closes some sockets itself, then waits for its stdin to close and exits
    # (closing the rest), so the closes' stacks are read while it lives.
    (echo go; sleep 1) | udp_workload --fixed-port 47123 > "$T/wl.json"
    sleep 1
    kill -INT $tracer
    wait $tracer
    check "$B" trace_exit "$?" 0
    cat "$T/trace.err"
    want=$(grep -o '"label"' "$T/wl.json" | wc -l)
    releases() { grep '"event":"release"' "$T/trace.json" | grep '"comm":"udp_workload"'; }
    creates=$(grep '"event":"create"' "$T/trace.json" | grep -c '"comm":"udp_workload"')
    check "$B" trace_creates "$creates" "$want"
    check "$B" trace_releases "$(releases | wc -l)" "$want"
    check "$B" trace_paired "$(releases | grep -c '"age_ns"')" "$want"
    # The same fds and ports the workload reports it got (ground truth from the
    # process itself).
    only() { grep -o "\"$1\":[0-9][0-9]*" | sed 's/.*://' | sort -n | tr '\n' ' '; }
    check "$B" trace_fds \
        "$(grep '"event":"create"' "$T/trace.json" | grep '"comm":"udp_workload"' | only fd)" \
        "$(grep '"sockets"' "$T/wl.json" | only fd)"
    check "$B" trace_ports \
        "$(grep '"event":"bind"' "$T/trace.json" | only local_port)" \
        "$(grep '"sockets"' "$T/wl.json" | only port)"
    check "$B" trace_fixed_port_bind "$(grep '"event":"bind"' "$T/trace.json" | grep -c '"local_port":47123')" 1
    # One release as the backend reported it, for whoever reads the log.
    releases | head -n 1
    if [ "$B" != cgroup ]; then
        check "$B" trace_release_stack "$(releases | grep -c '"sock_close')" "$want"
        # The sockets it closed while running (the rest are closed as it exits, maybe
        # too late to read their stacks): the user stack starts, named, in close(2)'s
        # libc wrapper (its main is inlined in this release build).
        closed=$(grep '"sockets"' "$T/wl.json" | grep -o '{[^}]*"closed":true[^}]*}' | only fd)
        named=0
        for fd in $closed; do
            if releases | grep "\"fd\":$fd," | grep -q '"user":\[{"addr":[0-9]*,"symbol":"close"'; then
                named=$((named + 1))
            fi
        done
        [ -n "$closed" ] || named="none-closed"
        check "$B" trace_release_stack_named "$named" "$(echo $closed | wc -w)"
    fi

    # check: USDT markers, a leak verdict with its PeerConnection and creating stack.
    sockscope check --backend "$B" --grace 300ms -- pc_sim --pcs 3 --leak 2 --linger 800 > "$T/leak.txt" 2>&1
    rc=$?
    cat "$T/leak.txt"
    check "$B" check_leak_exit "$rc" 1
    # The leak's line names its kind first (pc_sim never touches the socket: held).
    check "$B" check_leak_pc2 "$(grep -c 'LEAK held pid=.* pc_id=2 ' "$T/leak.txt")" 1
    check "$B" check_leak_stack "$(grep -q 'pc_sim_create_sockets' "$T/leak.txt" && echo named)" named
    # The leak is released as pc_sim returns from main: the late record names the task.
    check "$B" check_late_released_by "$(grep -c 'late pid=.* released by pc_sim (pid ' "$T/leak.txt")" 1
    if [ "$B" != cgroup ]; then
        # glibc's close goes by close, __close and __libc_close (one address).
        check "$B" check_late_release_stack \
            "$(grep -A2 'releasing stack:' "$T/leak.txt" | grep -Eq '0x[0-9a-f]+ (__libc_|__)?close' && echo named)" named
        # The releasing stack DWARF-unwound (--stacks dwarf): from close through pc_sim.rs
        # and libc's start code to _start, with no note of unwinding stopped early.
        # Kernels without bpf_task_pt_regs (5.10) say so and take frame pointers: no
        # verdict then (the matrix does not require it there).
        sockscope check --backend "$B" --stacks dwarf --grace 300ms -- pc_sim --pcs 3 --leak 2 --linger 800 > "$T/leak-dwarf.txt" 2>&1
        cat "$T/leak-dwarf.txt"
        if ! grep -q 'cannot copy user registers and stacks' "$T/leak-dwarf.txt"; then
            sed -n '/releasing stack:/,/^summary/p' "$T/leak-dwarf.txt" > "$T/release-dwarf.txt"
            check "$B" check_late_release_stack_dwarf \
                "$(grep -A1 'releasing stack:' "$T/release-dwarf.txt" | grep -Eq '0x[0-9a-f]+ (__libc_|__)?close' \
                    && grep -q 'src/bin/pc_sim.rs' "$T/release-dwarf.txt" \
                    && grep -q 'libc_start' "$T/release-dwarf.txt" \
                    && grep -Eq '0x[0-9a-f]+ _start$' "$T/release-dwarf.txt" \
                    && ! grep -q 'unwinding stopped' "$T/release-dwarf.txt" && echo unwound)" unwound
        fi
    fi
    sockscope check --backend "$B" --grace 300ms -- pc_sim --pcs 3 > "$T/clean.txt" 2>&1
    rc=$?
    cat "$T/clean.txt"
    check "$B" check_clean_exit "$rc" 0
done

for B in $REFUSED; do
    sockscope trace --backend "$B" --duration 1s > /dev/null 2> "$T/refused.err"
    rc=$?
    cat "$T/refused.err"
    check "$B" refused_exit "$rc" 2
    check "$B" refused_one_line "$(grep -c 'cannot be used here' "$T/refused.err")" 1
done
rm -rf "$T"
