#!/bin/busybox sh
# /init of the vm-test guest: mounts what sockscope needs, runs the end-to-end checks
# and prints one `VMTEST <kernel> <check> pass|fail <detail>` line per check on the
# serial console, then powers off. The host decides from these lines only (QEMU exits
# 0 even when the guest panics).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
K=$(uname -r)
echo "VMTEST-BEGIN $K"
say() { echo "VMTEST $K $1 $2 $3"; }
check() { if [ "$2" = "$3" ]; then say "$1" pass "$2"; else say "$1" fail "got=$2 want=$3"; fi; }

sockscope doctor > /tmp/doctor.txt 2>&1
rc=$?
cat /tmp/doctor.txt
check doctor "$rc" 0

# trace: the bundled workload's sockets, created, bound and released (at its exit).
sockscope trace --format json --comm udp_workload --duration 20s -o /tmp/trace.json 2> /tmp/trace.err &
tracer=$!
i=0
while ! grep -q "tracing UDP sockets" /tmp/trace.err && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done
udp_workload --no-wait --fixed-port 47123 > /tmp/wl.json
sleep 1
kill -INT $tracer
wait $tracer
check trace_exit "$?" 0
cat /tmp/trace.err
want=$(grep -o '"label"' /tmp/wl.json | wc -l)
creates=$(grep '"event":"create"' /tmp/trace.json | grep -c '"comm":"udp_workload"')
releases=$(grep '"event":"release"' /tmp/trace.json | grep -c '"comm":"udp_workload"')
fixed=$(grep '"event":"bind"' /tmp/trace.json | grep -c '"local_port":47123')
check trace_creates "$creates" "$want"
check trace_releases "$releases" "$want"
check trace_fixed_port_bind "$fixed" 1

# check: USDT markers and a leak verdict with its PeerConnection and creating stack.
sockscope check --grace 300ms -- pc_sim --pcs 3 --leak 2 --linger 800 > /tmp/leak.txt 2>&1
rc=$?
cat /tmp/leak.txt
check check_leak_exit "$rc" 1
check check_leak_pc2 "$(grep -c 'LEAK pid=.* pc_id=2 ' /tmp/leak.txt)" 1
check check_leak_stack "$(grep -q 'pc_sim_create_sockets' /tmp/leak.txt && echo named)" named
sockscope check --grace 300ms -- pc_sim --pcs 3 > /tmp/clean.txt 2>&1
rc=$?
cat /tmp/clean.txt
check check_clean_exit "$rc" 0

echo "VMTEST-END $K"
poweroff -f
