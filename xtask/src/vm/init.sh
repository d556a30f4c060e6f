#!/bin/busybox sh
# /init of the vm-test guest: mounts what sockscope needs, runs the end-to-end checks
# of checks.sh, whose `VMTEST` lines go to the serial console, then powers off. The
# host decides from these lines only (QEMU exits 0 even when the guest panics).
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
# Every backend must work here (lockdown none, BTF, kprobes): fentry is the automatic
# choice.
sh /checks.sh "$K" fentry fentry cgroup kprobe
echo "VMTEST-END $K"
poweroff -f
