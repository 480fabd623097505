#!/usr/bin/env bash
# Builds the demo VM's parts from real pieces, once: the Debian cloud kernel, a busybox initrd
# with the virtio modules it needs (block and network; scripts/guest/init as /init, the DHCP
# script and the httpd's pages of scripts/guest/), an ext4 base disk (qcow2) and a qcow2 diff
# over it holding one more file. Prints the output folder last.
# Usage: scripts/demo-assets.sh [OUTDIR]   (default: <repo>/.cache/demo-assets-<hash>; any cwd)
# The default folder is named after the hash of this recipe (this script and scripts/guest/),
# so checkouts with different guests that share one .cache never rebuild each other's parts.
# A second run with everything in place does nothing (stamp = recipe version + that hash);
# parallel runs wait for each other (flock).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
die() { echo "demo-assets: $*" >&2; exit 1; }
[ -f "$here/guest/init" ] || die "missing $here/guest/init"
RECIPE=6  # bump to rebuild everyone's assets when this recipe changes
hash="$( (cat "${BASH_SOURCE[0]}" "$here/lib/kernel-modules.sh"; cd "$here/guest" && find . -type f | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done) | sha256sum | cut -c1-16)"
out="${1:-$root/.cache/demo-assets-$hash}"
debs="$root/.cache/debs"
FILES="vmlinuz initrd.img base.qcow2 diff.qcow2 README.txt"
# Modules /init loads, in this order; their dependencies (read from each .ko) are added first.
# virtio_net (with failover and net_failover) drives the NIC a runtime gives for -p/--network.
MODS="virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_net evdev button"

want="recipe=$RECIPE hash=$hash"
stamp="$out/.stamp"
fresh() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  local f
  for f in $FILES; do [ -s "$out/$f" ] || return 1; done
}
if fresh; then echo "$out"; exit 0; fi

for cmd in apt-cache apt-get dpkg-deb busybox cpio gzip mkfs.ext4 debugfs qemu-img flock; do
  command -v "$cmd" >/dev/null 2>&1 || die "needs '$cmd' (run scripts/setup.sh, or apt-get install qemu-utils busybox-static cpio e2fsprogs)"
done
mkdir -p "$out" "$debs"
out="$(cd "$out" && pwd)"
stamp="$out/.stamp"
exec 9>"$out/.lock"
flock 9
if fresh; then echo "$out"; exit 0; fi  # someone else built it while we waited
rm -f "$stamp"
work="$(mktemp -d)"
dl=""
trap 'rm -rf "$work" ${dl:+"$dl"}' EXIT
T0=946684800  # 2000-01-01: a fixed time for reproducible images
export SOURCE_DATE_EPOCH=$T0 E2FSPROGS_FAKE_TIME=$T0

# 1. The kernel: the package linux-image-cloud-amd64 depends on, downloaded once into .cache/debs.
resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
pkg="$(resolve || true)"
if [ -z "$pkg" ]; then
  cached="$(ls -t "$debs"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n1 || true)"
  if [ -n "$cached" ]; then
    pkg="$(basename "$cached" | cut -d_ -f1)"  # offline: use what we downloaded before
  else
    echo "demo-assets: apt-cache does not know linux-image-cloud-amd64; running apt-get update" >&2
    apt-get update -qq || die "apt-get update failed"
    pkg="$(resolve || true)"
  fi
fi
[ -n "$pkg" ] || die "cannot resolve the package linux-image-cloud-amd64 depends on"
deb="$(ls "$debs"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
if [ -z "$deb" ]; then
  echo "demo-assets: downloading $pkg" >&2
  dl="$(mktemp -d)" && chmod 777 "$dl"  # apt-get download as root drops to _apt, which must write here
  (cd "$dl" && apt-get download -q "$pkg" 2>&1 | grep -v -i "sandbox" >&2) || true
  deb="$(ls "$dl"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)"
  [ -n "$deb" ] || die "apt-get download $pkg failed"
  mv "$deb" "$debs/"
  deb="$debs/$(basename "$deb")"
fi
dpkg-deb -x "$deb" "$work/kpkg" || die "cannot unpack $deb"
kver="${pkg#linux-image-}"
[ -f "$work/kpkg/boot/vmlinuz-$kver" ] || die "no boot/vmlinuz-$kver in $deb"
cp "$work/kpkg/boot/vmlinuz-$kver" "$out/vmlinuz.tmp" && mv "$out/vmlinuz.tmp" "$out/vmlinuz"

# 2. The initrd: busybox, the modules in dependency order, /init.
moddir="$work/kpkg/lib/modules/$kver/kernel"
ird="$work/initrd"
mkdir -p "$ird"/{bin,dev,proc,sys,mnt,tmp,etc/acpi,lib/modules,var/log,var/run}
cp "$(command -v busybox)" "$ird/bin/busybox"
file "$ird/bin/busybox" 2>/dev/null | grep -q dynamic && die "busybox is dynamically linked; install busybox-static"
: > "$ird/etc/modules"
modlist="$ird/etc/modules"
. "$here/lib/kernel-modules.sh"
for m in $MODS; do add_module "$m"; done
# busybox acpid: the ACPI power button (QMP system_powerdown) powers the guest off.
printf 'PWRF power\n' > "$ird/etc/acpid.conf"
printf '#!/bin/sh\necho "OVMS-POWEROFF: power button" > /dev/console\nsync\numount /mnt 2>/dev/null\npoweroff -f\n' \
  > "$ird/etc/acpi/power" && chmod 755 "$ird/etc/acpi/power"
cp "$here/guest/init" "$ird/init" && chmod 755 "$ird/init"
# DHCP (busybox udhcpc) and the httpd's pages (ovms.mode=httpd).
cp "$here/guest/udhcpc.script" "$ird/etc/udhcpc.script" && chmod 755 "$ird/etc/udhcpc.script"
cp -r "$here/guest/www" "$ird/www" && chmod 755 "$ird/www/cgi-bin/"*
find "$ird" -exec touch -h -d @$T0 {} +
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet --reproducible | gzip -9n) > "$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"

# 3. The disks: an ext4 base made without mounting, and a diff holding only what changed.
rootfs="$work/rootfs"
mkdir -p "$rootfs/etc" "$rootfs/data"
echo "base layer" > "$rootfs/etc/ovms-base"
find "$rootfs" -exec touch -h -d @$T0 {} +
uuid=5a2f1c1e-0f0e-4c3a-9d2b-0123456789ab  # fixed, so rebuilds give the same bytes
mkfs.ext4 -q -F -L ovms-demo -U "$uuid" -E "hash_seed=$uuid,root_owner=0:0" -d "$rootfs" "$work/base.raw" 64M >&2
# mkfs -d copies each file's ctime, which touch cannot set: pin them for reproducible bytes.
(cd "$rootfs" && find . | sed 's|^\.||; s|^$|/|' | while read -r p; do echo "sif \"$p\" ctime 20000101000000"; done) > "$work/ctimes"
debugfs -w -f "$work/ctimes" "$work/base.raw" >/dev/null 2>&1 || die "debugfs could not set ctimes"
rm -f "$out/base.qcow2" "$out/diff.qcow2"
qemu-img convert -q -f raw -O qcow2 "$work/base.raw" "$out/base.qcow2.tmp"
mv "$out/base.qcow2.tmp" "$out/base.qcow2"
cp "$work/base.raw" "$work/modified.raw"
echo "hello from the diff layer" > "$work/ovms-layer" && touch -d @$T0 "$work/ovms-layer"
debugfs -w -R "write $work/ovms-layer /etc/ovms-layer" "$work/modified.raw" >/dev/null 2>&1
[ "$(debugfs -R "cat /etc/ovms-layer" "$work/modified.raw" 2>/dev/null)" = "hello from the diff layer" ] \
  || die "debugfs could not write /etc/ovms-layer"
# The diff holds only the 64 KiB clusters that differ from the base. (qemu-img convert -B from a
# raw file would copy every non-zero cluster of modified.raw, i.e. the whole filesystem again.)
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$out/diff.qcow2.tmp" 64M
cmp -l "$work/base.raw" "$work/modified.raw" > "$work/changed" || [ $? -eq 1 ] || die "cmp failed"
cmds=()
for c in $(awk '{print int(($1 - 1) / 65536)}' "$work/changed" | uniq); do
  dd if="$work/modified.raw" of="$work/cluster.$c" bs=65536 skip="$c" count=1 status=none
  cmds+=(-c "write -q -s $work/cluster.$c $((c * 65536)) 65536")
done
[ ${#cmds[@]} -gt 0 ] || die "the diff layer changed nothing"
qemu-io -f qcow2 "${cmds[@]}" "$out/diff.qcow2.tmp" || die "qemu-io could not write the diff"
qemu-img rebase -u -f qcow2 -F qcow2 -b base.qcow2 "$out/diff.qcow2.tmp"  # relative: the folder can move
# Check it: backed by base.qcow2 (relative), the same content as modified.raw, a few clusters of its own.
(cd "$out" && qemu-img info --output=json diff.qcow2.tmp) | grep -q '"backing-filename": "base.qcow2"' \
  || die "diff.qcow2 is not backed by base.qcow2"
(cd "$out" && qemu-img compare -q -f qcow2 -F raw diff.qcow2.tmp "$work/modified.raw") \
  || die "diff.qcow2 over base.qcow2 does not read back as the modified disk"
own="$(cd "$out" && qemu-img map --output=json diff.qcow2.tmp | grep '"depth": 0' | grep '"data": true' \
  | sed 's/.*"length": \([0-9]*\),.*/\1/' | awk '{s += $1} END {print s + 0}')"
[ "$own" -gt 0 ] && [ "$own" -le $((1024 * 1024)) ] || die "diff.qcow2 holds $own bytes of its own; expected a few clusters"
mv "$out/diff.qcow2.tmp" "$out/diff.qcow2"
(cd "$out" && qemu-img check -q base.qcow2 && qemu-img check -q diff.qcow2) || die "qemu-img check failed"

cat > "$out/README.txt" <<TXT
Demo VM parts built by scripts/demo-assets.sh (recipe $RECIPE) from real pieces: vmlinuz is the
Debian cloud kernel ($pkg); initrd.img is a gzip newc cpio with busybox-static, the virtio
modules for virtio-mmio (microvm) and virtio-pci (q35) block and network devices (plus evdev and
button for the ACPI power button), and scripts/guest/init as /init, which prints OVMS-* markers on
ttyS0, takes an address by DHCP when it has a NIC, and acts on
ovms.mode=idle|counter|httpd|write|ivshmem|poweroff; base.qcow2 is a 64 MiB ext4 disk holding
/etc/ovms-base ("base layer") and /data/; diff.qcow2 is a qcow2 diff whose backing file is
base.qcow2 (relative name, so this folder can move) and which only adds /etc/ovms-layer.
TXT
echo "$want" > "$stamp"
echo "$out"
