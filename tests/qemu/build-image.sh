#!/usr/bin/env bash
# make image: the artefacts the qemu tests boot, in target/qemu/:
#   vmlinux     Debian's generic kernel, uncompressed (cached outside the repo)
#   initrd      stage 1 (busybox, loop + squashfs drivers) + root.sqfs appended
#   root.sqfs   the node's root: pact-agent as /sbin/init, pact, pact-testsvc,
#               /etc/pact/{agent,services}.toml, the watchdog driver and
#               modules.dep. No shell, no busybox: the agent needs neither.
#
# The kernel and stage 1 are cached in $PACT_QEMU_CACHE (default
# ~/.cache/pact-qemu); the first run downloads the kernel package via apt.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
here=$top/tests/qemu
out=$top/target/qemu
cache=${PACT_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pact-qemu}
mkdir -p "$out" "$cache"
log() { echo "image: $*" >&2; }

# ---- 1. static release binaries (PID 1 must not depend on the image's libc)
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --quiet --release --bins \
  --target "$target" --target-dir "$top/target/static"
bin=$top/target/static/$target/release

# ---- 2. kernel, cached
exec 9>"$cache/.lock"
flock 9
pkg=$(cat "$cache/kernel-pkg" 2>/dev/null || true)
if [ -z "$pkg" ]; then
  find_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
  pkg=$(find_pkg)
  [ -n "$pkg" ] || { apt-get update -qq; pkg=$(find_pkg); }
  [ -n "$pkg" ] || { log "cannot find Debian's linux-image-amd64"; exit 1; }
  echo "$pkg" > "$cache/kernel-pkg"
fi
kver=${pkg#linux-image-}
kdir=$cache/$kver
if [ ! -f "$kdir/ok" ]; then
  log "downloading $pkg"
  rm -rf "$kdir"
  mkdir -p "$kdir/dl"
  chmod 777 "$kdir/dl" # apt's sandbox user writes here
  (cd "$kdir/dl" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
    { apt-get update -qq; (cd "$kdir/dl" && apt-get download -q "$pkg" >/dev/null); }
  dpkg-deb -x "$kdir"/dl/*.deb "$kdir/tree"
  rm -rf "$kdir/dl"
  depmod -b "$kdir/tree" "$kver" # the package leaves modules.dep to its postinst
  python3 "$here/extract-vmlinux.py" "$kdir/tree/boot/vmlinuz-$kver" "$kdir/vmlinux" ||
    cp "$kdir/tree/boot/vmlinuz-$kver" "$kdir/vmlinux" # boots too, just slower
  touch "$kdir/ok"
fi
modroot=$kdir/tree/lib/modules/$kver
# Module files of $@ with their dependencies, dependencies first.
modfiles() { modprobe -a -d "$kdir/tree" -S "$kver" --show-depends "$@" | awk '$1 == "insmod" && !seen[$2]++ {print $2}'; }

# ---- 3. stage 1 initramfs, cached
stage1=$kdir/stage1.cpio.gz
stage1_sum=$(sha256sum "$here/stage1-init" | cut -c1-16)
if [ "$(cat "$kdir/stage1.sum" 2>/dev/null)" != "$stage1_sum" ]; then
  log "building stage 1"
  s=$(mktemp -d)
  mkdir -p "$s"/{bin,dev,proc,sys,etc,lib/modules}
  cp /bin/busybox "$s/bin/busybox"
  for a in sh mount umount insmod switch_root mkdir cat echo poweroff; do ln -s busybox "$s/bin/$a"; done
  mknod -m 600 "$s/dev/console" c 5 1
  for ko in $(modfiles loop squashfs); do
    cp "$ko" "$s/lib/modules/"
    basename "$ko" .ko >> "$s/etc/modules"
  done
  cp "$here/stage1-init" "$s/init"
  chmod 755 "$s/init"
  (cd "$s" && find . | cpio -o -H newc --quiet | gzip -1 > "$stage1.tmp")
  mv "$stage1.tmp" "$stage1"
  echo "$stage1_sum" > "$kdir/stage1.sum"
  rm -rf "$s"
fi
flock -u 9

# ---- 4. the node's root
r=$(mktemp -d)
trap 'rm -rf "$r"' EXIT
mkdir -p "$r"/{sbin,usr/bin,etc/pact,dev,proc,sys,run,tmp,var/log,lib/modules/"$kver"}
install -m 755 "$bin/pact-agent" "$r/sbin/init"
install -m 755 "$bin/pact" "$bin/pact-testsvc" "$r/usr/bin/"
install -m 644 "$here/agent.toml" "$r/etc/pact/agent.toml"
{
  sed 's|@BIN@|/usr/bin|g' "$top/examples/services.toml"
  echo
  cat "$here/test-services.toml"
} > "$r/etc/pact/services.toml"
# The boot benchmark's second configuration: the nine example services
# alone (no test services, no journal), as the boot target is stated.
sed 's|@BIN@|/usr/bin|g' "$top/examples/services.toml" > "$r/etc/pact/services-nine.toml"
sed -e 's|^services_file = .*|services_file = "/etc/pact/services-nine.toml"|' \
    -e 's|^stall_hook = true|stall_hook = false|' "$here/agent.toml" > "$r/etc/pact/agent-nine.toml"
# Its third: the same boot with no services (the agent's own fixed cost).
printf '[vcluster.ml-training]\n' > "$r/etc/pact/services-zero.toml"
sed -e 's|^services_file = .*|services_file = "/etc/pact/services-zero.toml"|' \
    -e 's|^stall_hook = true|stall_hook = false|' "$here/agent.toml" > "$r/etc/pact/agent-zero.toml"
printf 'root:x:0:0:root:/:/sbin/nologin\n' > "$r/etc/passwd"
printf 'root:x:0:\n' > "$r/etc/group"
for ko in $(modfiles i6300esb); do
  d=$r/lib/modules/$kver/${ko#"$modroot"/}
  mkdir -p "$(dirname "$d")"
  cp "$ko" "$d"
done
cp "$modroot"/modules.builtin "$modroot"/modules.builtin.modinfo "$modroot"/modules.order "$r/lib/modules/$kver/"
depmod -b "$r" "$kver"
# Check what PID 1 will need: a static init and no interpreter.
if ldd "$r/sbin/init" 2>/dev/null | grep -q '=>'; then log "pact-agent is not static"; exit 1; fi
rm -f "$out/root.sqfs"
mksquashfs "$r" "$out/root.sqfs" -noappend -all-root -comp gzip -quiet >/dev/null

# ---- 5. initrd = stage 1, zero-padded to 4 bytes, + a cpio holding root.sqfs
cp "$stage1" "$out/initrd"
truncate -s $((($(stat -c %s "$stage1") + 3) / 4 * 4)) "$out/initrd"
(cd "$out" && echo root.sqfs | cpio -o -H newc --quiet >> initrd)
ln -sf "$kdir/vmlinux" "$out/vmlinux"
echo "$kver" > "$out/kernel-version"
log "target/qemu: kernel $kver, root.sqfs $(du -k "$out/root.sqfs" | cut -f1) KiB, initrd $(du -k "$out/initrd" | cut -f1) KiB"
