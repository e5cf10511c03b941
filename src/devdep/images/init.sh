#!/bin/sh
# /init of the devdep guest, run by busybox sh from the initramfs as PID 1.
#
# It loads the modules the kernel needs for its virtio devices and file
# systems, presents the user's image at /sysroot (read-only unless the command
# line says devdep.rootfs=rw) with /tmp and /workspace as tmpfs and
# /run/devdep/secrets as a ramfs, mounts the agent runtime disk at /agent,
# configures the network the command line's ip= argument describes, and runs
# the guest agent. When the agent exits, the VM powers off: PID 1 must
# never exit, and a VM without an agent has nothing left to do.
#
# devdep.init_test=1 on the command line is a self-test: instead of the agent,
# /init prints what it mounted between DEVDEP-INIT-TEST markers, times two
# imports of the agent's module (cold, then with the code already translated
# and cached), and powers off. The image tests use it.

PATH=/bin
export PATH

fail() {
    echo "devdep-init: $*"
    poweroff -f
    # With QEMU's -no-reboot a reset ends the VM just as well.
    reboot -f
    sleep 3600
}

# Poll for a device node the kernel creates asynchronously (up to 5 s).
wait_for() {
    tries=0
    while ! test "$1" "$2"; do
        tries=$((tries + 1))
        [ "$tries" -gt 500 ] && return 1
        sleep 0.01
    done
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

rootfs_mode=ro
agent_port=org.devdep.agent.0
init_test=
ip_config=
for word in $(cat /proc/cmdline); do
    case "$word" in
        devdep.rootfs=*) rootfs_mode="${word#*=}" ;;
        devdep.agent_port=*) agent_port="${word#*=}" ;;
        devdep.init_test=*) init_test="${word#*=}" ;;
        ip=*) ip_config="${word#ip=}" ;;
    esac
done

# One module per line, in dependency order, with flags: an "optional" module
# may fail (a CPU-specific driver on a CPU without its instructions); a
# "network" one is loaded only when the VM has a network device, which the
# host announces with ip= (an isolated VM has none).
while read -r module flags; do
    case " $flags " in
        *" network "*) [ -n "$ip_config" ] || continue ;;
    esac
    case " $flags " in
        *" optional "*) insmod "/lib/modules/$module" 2>/dev/null ;;
        *) insmod "/lib/modules/$module" || fail "cannot load the module $module" ;;
    esac
done < /lib/modules/load-order

# The kernel's own ip= autoconfiguration runs before /init and so before
# virtio_net is loaded: apply the argument here. Its fields, as the host's
# network sandbox writes them: <address>::<gateway>:<netmask>::<device>:off
# [:<dns server>]. Without the argument the guest keeps only lo.
ip link set lo up
resolv_conf=
if [ -n "$ip_config" ]; then
    old_ifs=$IFS
    IFS=:
    # shellcheck disable=SC2086 # split on purpose, empty fields included
    set -- $ip_config
    IFS=$old_ifs
    address=$1 gateway=$3 netmask=$4 device=${6:-eth0} dns=$8
    wait_for -e "/sys/class/net/$device" || fail "no network device $device"
    ifconfig "$device" "$address" netmask "$netmask" up \
        || fail "cannot configure $device"
    [ -n "$gateway" ] && { ip route add default via "$gateway" \
        || fail "cannot add the default route via $gateway"; }
    # The guest's only resolver is the host's responder; without one the file
    # is empty, so a lookup fails at once instead of trying the image's.
    resolv_conf="# written by devdep's /init
"
    [ -n "$dns" ] && resolv_conf="${resolv_conf}nameserver $dns
"
fi

wait_for -b /dev/vda || fail "no root file system disk (/dev/vda)"
mkdir -p /sysroot
if [ "$rootfs_mode" = rw ]; then
    # The VMM attached a throw-away copy-on-write overlay of the image.
    mount -t ext4 -o rw /dev/vda /sysroot || fail "cannot mount /dev/vda"
    mkdir -p /sysroot/proc /sysroot/sys /sysroot/dev /sysroot/tmp \
        /sysroot/workspace /sysroot/run/devdep/secrets
    if [ -n "$ip_config" ]; then
        mkdir -p /sysroot/etc
        rm -f /sysroot/etc/resolv.conf
        printf '%s' "$resolv_conf" > /sysroot/etc/resolv.conf
    fi
else
    # The image may lack the mount points below and must not be written, so
    # a read-only overlay puts a small skeleton of them above it. noload:
    # never replay a journal, since that would write to the disk.
    mkdir -p /run/image /run/skeleton
    mount -t ext4 -o ro,noload /dev/vda /run/image || fail "cannot mount /dev/vda"
    mount -t tmpfs -o mode=0755,size=64k skeleton /run/skeleton
    mkdir -p /run/skeleton/proc /run/skeleton/sys /run/skeleton/dev \
        /run/skeleton/tmp /run/skeleton/workspace /run/skeleton/run/devdep/secrets
    # A file in the skeleton hides the image's, even when that is a symlink.
    if [ -n "$ip_config" ]; then
        mkdir -p /run/skeleton/etc
        printf '%s' "$resolv_conf" > /run/skeleton/etc/resolv.conf
    fi
    mount -t overlay -o ro,lowerdir=/run/skeleton:/run/image overlay /sysroot \
        || fail "cannot mount the read-only overlay of the image"
fi

mount -t proc proc /sysroot/proc
mount -t sysfs sysfs /sysroot/sys
mount -t devtmpfs devtmpfs /sysroot/dev
mkdir -p /sysroot/dev/pts /sysroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /sysroot/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm /sysroot/dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /sysroot/tmp
mount -t tmpfs -o mode=0755,nodev workspace /sysroot/workspace
# ramfs is never swapped out (and the guest has no swap at all).
mount -t ramfs -o mode=0700 secrets /sysroot/run/devdep/secrets

wait_for -b /dev/vdb || fail "no agent runtime disk (/dev/vdb)"
mount -t ext4 -o ro,noload /dev/vdb /agent || fail "cannot mount /dev/vdb"

port=
tries=0
while [ -z "$port" ]; do
    for name_file in /sys/class/virtio-ports/*/name; do
        if [ -r "$name_file" ] && [ "$(cat "$name_file")" = "$agent_port" ]; then
            port_directory="${name_file%/name}"
            port="${port_directory##*/}"
        fi
    done
    tries=$((tries + 1))
    [ "$tries" -gt 500 ] && fail "no virtio port named $agent_port"
    [ -z "$port" ] && sleep 0.01
done
wait_for -c "/dev/$port" || fail "no device node /dev/$port"

# The agent's runtime: /usr, /lib64 and the libraries point into /agent, so
# its Python runs as /usr/bin/python3. -I -S: no environment, no site
# packages; devdep.guest lives in the runtime's own library directory.
agent="/usr/bin/python3 -I -S -m devdep.guest.agent --port=/dev/$port --sysroot=/sysroot"

if [ -n "$init_test" ]; then
    echo "DEVDEP-INIT-TEST begin"
    grep -E ' /sysroot(/| )' /proc/mounts
    for directory in usr tmp workspace run/devdep/secrets; do
        if touch "/sysroot/$directory/.devdep-init-test" 2>/dev/null; then
            echo "writable /$directory"
        else
            echo "read-only /$directory"
        fi
    done
    echo "mode /run/devdep/secrets $(stat -c %a /sysroot/run/devdep/secrets)"
    echo "interfaces $(ls /sys/class/net | tr '\n' ' ')"
    ip -4 -o addr show | awk '{print "address", $2, $4}'
    ip route | sed 's/^/route /'
    sed 's/^/resolv.conf /' /sysroot/etc/resolv.conf 2>/dev/null
    echo "swap $(tail -n +2 /proc/swaps | wc -l)"
    echo "port /dev/$port"
    echo "agent $agent"
    for attempt in cold warm; do
        start=$(cut -d' ' -f1 /proc/uptime)
        /usr/bin/python3 -I -S -c 'import devdep.guest.agent' \
            && end=$(cut -d' ' -f1 /proc/uptime) \
            && echo "python-start $attempt $start $end"
    done
    echo "DEVDEP-INIT-TEST end"
    poweroff -f
    reboot -f
fi

cd /
# Steps inherit the agent's environment; this PATH serves both the initramfs
# (busybox in /bin) and a Debian-like image chrooted into.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$agent
echo "devdep-init: the guest agent exited with status $?; powering off"
poweroff -f
reboot -f
