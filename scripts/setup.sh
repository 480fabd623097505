#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently: Debian packages (apt-get), npm
# packages (npm ci), the demo VM's parts (scripts/demo-assets.sh) and the generic guest of
# converted container images (scripts/ovms-init/build.sh). Safe to run again:
# each step checks first and does nothing when its work is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages and the command each one provides (checked by command, so a second run is quick).
declare -A PKG=(
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [oci-image-tool]=oci-image-tool
  [busybox]=busybox-static
  [cpio]=cpio
  [lz4]=lz4
  [mkfs.ext4]=e2fsprogs
  [debugfs]=e2fsprogs
  [mke2fs]=e2fsprogs
  [e2fsck]=e2fsprogs
  [zstd]=zstd
  [xz]=xz-utils
  [htpasswd]=apache2-utils
  [containerd]=containerd
  [curl]=curl
  # ovmd confines each QEMU in namespaces as an unprivileged user (rfc §8.4).
  [bwrap]=bubblewrap
  [setpriv]=util-linux
  # The web console's browser test drives Debian's Chromium with playwright-core (test/console/).
  [chromium]=chromium
)
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages: reinstall only when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# The demo VM's parts (kernel, initrd, disks), built once into .cache/.
bash scripts/demo-assets.sh >/dev/null
# The generic kernel and OVMS-Init initrd that `ovm convert` adds to container images.
bash scripts/ovms-init/build.sh >/dev/null
