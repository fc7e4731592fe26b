"""The ``/init`` of nfvha's guest image (ADR 0017): pid 1 of a real nfvha VM.

A busybox shell script. It turns the VM into the same place a process VM's guest
runs in: the host's file system (read-only, 9p tag :data:`HOST_TAG`) as its root, a
writable VM directory at the same path as on the host, the VM's virtio disk mounted
where the guest program keeps its disk, and the guest link on the virtio-serial port;
then it runs ``python -m nfvha.nfvi.guest`` under ``chroot`` and powers the VM off
when that exits (the guest program *is* the VM's operating system, as in a process VM).

Kernel command line (``nfvha.*`` parameters have a dot, so the kernel keeps them off
init's environment; the script reads ``/proc/cmdline``); paths must not contain
spaces:

- ``nfvha.python=/abs/path/to/python`` (required): the host venv's interpreter;
- ``nfvha.vmdir=/abs/vm/dir`` (required): the VM directory on the host;
- ``nfvha.config=/abs/guest.json``: where the guest's config is on the host
  (default ``<vmdir>/guest.json``); read once at boot through the host share;
- ``nfvha.ip=198.18.x.y/NN`` and ``nfvha.gw=198.18.x.y``: eth0's address; only
  addresses in 198.18.0.0/15 are accepted and no default route is ever set;
- ``nfvha.port=NAME``: the virtio-serial port of the guest link (default
  ``org.nfvha.guest.0``);
- ``nfvha.wait=S``: how long to wait for a device (disk, port, NIC) to appear
  (default 20 s).

Inside the guest (under the chroot): ``/proc``, ``/sys``, ``/dev`` (+ pts, shm) are the
guest's own; ``/run`` is a tmpfs (``TMPDIR=/run/tmp``); everything else is the host's,
read-only, ``/tmp`` included. The VM directory is a small tmpfs holding a copy of
``guest.json``, ``console.log`` (a symlink to ``/dev/console``, i.e. the serial
console the hypervisor writes to the host's ``<vmdir>/console.log``), the guest's
``vnfcs.json`` (inside the VM only: the agent learns the state over the guest link)
and ``disk/``, where ``/dev/vda`` (ext4) is mounted: the VM's persistent state.
"""

from __future__ import annotations

HOST_TAG = "nfvha-host"
PORT_NAME = "org.nfvha.guest.0"
DISK_DEVICE = "/dev/vda"
MODULE_LIST = "etc/nfvha/modules"

INIT_SCRIPT = r"""#!/bin/busybox sh
# pid 1 of an nfvha guest (src/nfvha/nfvi/guestinit.py, ADR 0017). Never exits:
# when the guest program ends, the VM powers off.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "nfvha-init: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { say "FATAL: $*"; sync; poweroff -f; sleep 3600; }
# Devices appear asynchronously once their drivers are loaded (the virtio-serial
# port only after the host has announced it); busybox has no event to wait on here.
wait_for() {
  n=$(( $2 * 50 ))
  while [ $n -gt 0 ] && ! eval "$1"; do sleep 0.02; n=$((n - 1)); done
  eval "$1"
}
port_dev() {
  for d in /sys/class/virtio-ports/*; do
    [ -r "$d/name" ] && [ "$(cat "$d/name")" = "$1" ] && { echo "${d##*/}"; return 0; }
  done
  return 1
}

python= vmdir= config= ip= gw= port=org.nfvha.guest.0 wait_s=20
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    nfvha.python=*) python=${arg#*=} ;;
    nfvha.vmdir=*) vmdir=${arg#*=} ;;
    nfvha.config=*) config=${arg#*=} ;;
    nfvha.ip=*) ip=${arg#*=} ;;
    nfvha.gw=*) gw=${arg#*=} ;;
    nfvha.port=*) port=${arg#*=} ;;
    nfvha.wait=*) wait_s=${arg#*=} ;;
  esac
done
[ -n "$python" ] && [ -n "$vmdir" ] || die "nfvha.python= and nfvha.vmdir= are required"
[ -n "$config" ] || config="$vmdir/guest.json"
say "booting (kernel $(uname -r))"

while read -r mod; do
  insmod "/lib/modules/$mod" || say "insmod $mod failed"
done < /etc/nfvha/modules
say "modules loaded"

mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose nfvha-host /host \
  || die "cannot mount the host's file system (9p tag nfvha-host)"
cp "/host$config" /guest.json || die "no guest config at $config on the host"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs -o mode=1777 shm /host/dev/shm
mount -t tmpfs -o mode=755 run /host/run
mkdir -m 1777 /host/run/tmp
# The VM directory: writable, the VM's own (the host's copy is the hypervisor's).
mount -t tmpfs -o mode=755,size=16m vmdir "/host$vmdir" \
  || die "cannot mount the VM directory $vmdir"
cp /guest.json "/host$vmdir/guest.json"
ln -s /dev/console "/host$vmdir/console.log"
stty -F /dev/console -onlcr 2>/dev/null
mkdir "/host$vmdir/disk"
if wait_for "[ -b /dev/vda ]" "$wait_s"; then
  mount -t ext4 -o noatime /dev/vda "/host$vmdir/disk" || die "cannot mount the VM's disk /dev/vda"
else
  say "no disk /dev/vda: the VM's state is not persistent"
fi

ip link set lo up
if [ -n "$ip" ]; then
  case "$ip" in 198.18.*|198.19.*) ;; *) die "nfvha.ip=$ip is outside 198.18.0.0/15" ;; esac
  wait_for "[ -e /sys/class/net/eth0 ]" "$wait_s" || die "no eth0 for nfvha.ip=$ip"
  ip addr add "$ip" dev eth0 && ip link set eth0 up || die "cannot configure eth0 with $ip"
  case "$gw" in
    198.18.*|198.19.*) ip route add 198.18.0.0/15 via "$gw" 2>/dev/null ;;
    "") ;;
    *) say "nfvha.gw=$gw is outside 198.18.0.0/15: ignored" ;;
  esac
fi

wait_for "port_dev $port >/dev/null" "$wait_s" || die "no virtio-serial port $port"
mkdir -p /dev/virtio-ports
ln -sf "../$(port_dev "$port")" "/dev/virtio-ports/$port"
say "starting the guest program"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  TMPDIR=/run/tmp PYTHONDONTWRITEBYTECODE=1 \
  chroot /host "$python" -m nfvha.nfvi.guest --vm-dir "$vmdir" --channel "/dev/virtio-ports/$port"
say "the guest program exited (status $?): power off"
sync
umount "/host$vmdir/disk" 2>/dev/null
poweroff -f
sleep 3600
"""
