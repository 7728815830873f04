#!/usr/bin/env bash
# Builds an OCI image layout of Debian's busybox-static with umoci: one
# layer with busybox and a link for each of its applets, /etc/passwd,
# /etc/group and /etc/motd, and `sh` as the command.
#   examples/container/busybox-image.sh DIR      (DIR/oci is the layout)
set -euo pipefail
out=${1:?usage: busybox-image.sh DIR}
bb=$(command -v busybox) || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
command -v umoci >/dev/null || { echo "umoci not found: apt-get install umoci" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
cd "$out"
umoci init --layout oci
umoci new --image oci:latest
umoci unpack --image oci:latest bundle >/dev/null
root=bundle/rootfs
mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev}
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
echo "Welcome to a Tangram container." > "$root/etc/motd"
chmod 1777 "$root/tmp"
umoci repack --image oci:latest bundle
umoci config --image oci:latest --config.cmd sh --config.env PATH=/bin --config.workingdir /
rm -rf bundle
echo "$out/oci"
