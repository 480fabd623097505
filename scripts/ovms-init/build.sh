#!/usr/bin/env bash
# Builds the generic guest of converted container images, reproducibly, once: the Debian cloud
# kernel (the same package the demo VM uses) and the OVMS-Init initrd: busybox-static, the
# virtio/ACPI modules it needs (dependencies read from each .ko), and the scripts of this folder
# (init = stage 1, init2 = stage 2 after switch_root, power = the ACPI power-button action,
# control = the reader of the runtime's commands on the control port).
# Usage: scripts/ovms-init/build.sh [OUTDIR]   (default: <repo>/.cache/ovms-init; any cwd)
# Prints the output folder last. A second run with everything in place does nothing (stamp =
# recipe + hashes of these files); parallel runs wait for each other (flock).
# Reproducible: fixed mtimes (SOURCE_DATE_EPOCH), sorted newc cpio with owner 0:0
# (--reproducible), gzip -n; the kernel is the .deb's own file. Same inputs, same bytes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/.cache/ovms-init}"
RECIPE=1
FILES="vmlinuz initrd.img README.txt"
# Modules stage 1 loads, in this order; their dependencies (read from each .ko) come first.
MODS="virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk virtio_console evdev button"

die() { echo "ovms-init: $*" >&2; exit 1; }
for f in init init2 power control; do [ -f "$here/$f" ] || die "missing $here/$f"; done
want="recipe=$RECIPE $(cat "${BASH_SOURCE[0]}" "$root/scripts/lib/kernel-modules.sh" "$here/init" "$here/init2" "$here/power" "$here/control" | sha256sum | cut -c1-16)"
fresh() {
  [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ] || return 1
  local f
  for f in $FILES; do [ -s "$out/$f" ] || return 1; done
}
if fresh; then echo "$out"; exit 0; fi
for cmd in busybox cpio gzip dpkg-deb sha256sum flock xz; do
  command -v "$cmd" >/dev/null 2>&1 || die "needs '$cmd' (run scripts/setup.sh)"
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"
exec 9>"$out/.lock"
flock 9
if fresh; then echo "$out"; exit 0; fi
rm -f "$out/.stamp"

# The kernel: the demo's (scripts/demo-assets.sh downloads the package once into .cache/debs);
# the modules come from the very package that vmlinuz came from, found by its hash.
demo="$(bash "$root/scripts/demo-assets.sh" | tail -n1)"
ksum="$(sha256sum "$demo/vmlinuz" | cut -d' ' -f1)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
T0="${SOURCE_DATE_EPOCH:-946684800}"  # 2000-01-01 unless the caller pins another time
deb=""
for d in $(ls -t "$root"/.cache/debs/linux-image-*-cloud-amd64_*.deb 2>/dev/null); do
  rm -rf "$work/kpkg"
  dpkg-deb -x "$d" "$work/kpkg"
  k="$(ls "$work"/kpkg/boot/vmlinuz-* 2>/dev/null | head -n1)"
  if [ -n "$k" ] && [ "$(sha256sum "$k" | cut -d' ' -f1)" = "$ksum" ]; then deb="$d"; break; fi
done
[ -n "$deb" ] || die "no package in .cache/debs holds the demo kernel $demo/vmlinuz"
kver="$(basename "$k")"; kver="${kver#vmlinuz-}"
pkg="$(basename "$deb" .deb)"
moddir="$work/kpkg/lib/modules/$kver/kernel"

ird="$work/initrd"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules,ovms}
cp "$(command -v busybox)" "$ird/bin/busybox"
file "$ird/bin/busybox" 2>/dev/null | grep -q dynamic && die "busybox is dynamically linked; install busybox-static"
: > "$ird/etc.modules"
modlist="$ird/etc.modules"
. "$root/scripts/lib/kernel-modules.sh"
for m in $MODS; do add_module "$m"; done
mkdir -p "$ird/etc" && mv "$ird/etc.modules" "$ird/etc/modules"
install -m 755 "$here/init" "$ird/init"
install -m 755 "$here/init2" "$ird/ovms/init2"
install -m 755 "$here/power" "$ird/ovms/power"
install -m 755 "$here/control" "$ird/ovms/control"
chmod -R u=rwX,go=rX "$ird" && chmod 755 "$ird/init" "$ird/ovms/init2" "$ird/ovms/power" "$ird/ovms/control" "$ird/bin/busybox"
find "$ird" -exec touch -h -d "@$T0" {} +
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet --reproducible | gzip -9n) > "$out/initrd.img.tmp"
cp "$k" "$out/vmlinuz.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
cat > "$out/README.txt" <<TXT
The generic guest of converted container images, built by scripts/ovms-init/build.sh (recipe
$RECIPE): vmlinuz is the Debian cloud kernel of $pkg; initrd.img is OVMS-Init, a gzip newc cpio
(sorted, owner 0:0, mtimes $T0) of busybox-static, the modules $(tr '\n' ' ' < "$ird/etc/modules")
and the scripts init, ovms/init2, ovms/power and ovms/control. See rfc/ovms-v0.1.md §6.7 (the OVMS-Init profile).
TXT
echo "$want" > "$out/.stamp"
echo "$out"
