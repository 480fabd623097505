# Sourced by scripts/demo-assets.sh and scripts/ovms-init/build.sh: copies kernel modules of a
# Debian kernel package into an initrd tree, decompressed, each after the modules it depends on
# (read from the .ko's own `depends=`), and lists them in load order.
# Needs: $moddir (the package's lib/modules/<kver>/kernel), $ird (the initrd tree), $modlist
# (the file that gets one module name per line), $pkg (for messages) and a `die` function.

# add_module NAME: copy NAME.ko and its dependencies into $ird/lib/modules, dependencies first.
add_module() {
  local m="$1" f d
  grep -qx "$m" "$modlist" && return 0
  f="$(find "$moddir" \( -name "$m.ko" -o -name "$m.ko.*" -o -name "${m//_/-}.ko" -o -name "${m//_/-}.ko.*" \) | head -n1)"
  [ -n "$f" ] || die "module $m not found in $pkg"
  case "$f" in
    *.ko.xz) xz -dc "$f" > "$ird/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" > "$ird/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" > "$ird/lib/modules/$m.ko" ;;
    *.ko) cp "$f" "$ird/lib/modules/$m.ko" ;;
    *) die "unknown module file $f" ;;
  esac
  for d in $(tr '\0' '\n' < "$ird/lib/modules/$m.ko" | sed -n 's/^depends=//p' | tr ',-' ' _'); do
    add_module "$d"
  done
  echo "$m" >> "$modlist"
}
