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
# What this kernel must do (xtask/src/vm/matrix.rs), from the kernel command line:
# vmtest_args=AUTO,WORKING...,--,REFUSED...
if [ -n "$vmtest_args" ]; then
    sh /checks.sh "$K" $(echo "$vmtest_args" | tr , ' ')
else
    echo "VMTEST $K auto doctor fail no-vmtest_args-on-the-kernel-command-line"
fi
echo "VMTEST-END $K"
poweroff -f
