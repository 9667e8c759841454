#!/usr/bin/env bash
# rootfs.sh OUT [--lib SONAME]... BINARY...
#
# Assembles the root filesystem that fmtrain's FROM-scratch images COPY in
# (no registry here, so no base image): the directories the programs write to,
# an /etc/passwd naming the unprivileged user 65532, and - for binaries that are
# dynamically linked (purego's dlopen makes a CGO_ENABLED=0 binary need
# ld-linux and libc) - the shared libraries they need, copied from this host at
# the paths the dynamic loader searches. --lib adds a library that is only
# dlopen'ed at run time (libopenblas.so.0), with its own dependencies.
# Static binaries add nothing. The binaries themselves are COPY'd by the
# Dockerfiles, not by this script.
set -euo pipefail

usage() { echo "usage: $0 OUT [--lib SONAME]... BINARY..." >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1
shift

libs=()
bins=()
while [ $# -gt 0 ]; do
	case $1 in
	--lib)
		[ $# -ge 2 ] || usage
		libs+=("$2")
		shift 2
		;;
	*)
		bins+=("$1")
		shift
		;;
	esac
done

rm -rf "$out"
mkdir -p "$out/tmp" "$out/etc" "$out/shared" "$out/var/lib/fmtrain" "$out/var/lib/etcd" "$out/var/lib/nats"
chmod 1777 "$out/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nfmtrain:x:65532:65532:fmtrain:/var/lib/fmtrain:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nfmtrain:x:65532:\n' >"$out/etc/group"

# copy_with_deps FILE: FILE's shared-library closure (as ldd resolves it on
# this host), each library at its resolved path with its link name beside it.
copy_with_deps() {
	local f=$1 dep
	if ! ldd "$f" >/dev/null 2>&1; then
		return 0 # static: nothing to copy
	fi
	while read -r dep; do
		[ -n "$dep" ] || continue
		mkdir -p "$out$(dirname "$dep")"
		cp -L "$dep" "$out$dep"
	done < <(ldd "$f" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }')
}

for b in "${bins[@]}"; do
	[ -f "$b" ] || { echo "rootfs.sh: binary $b not found (build it first)" >&2; exit 1; }
	copy_with_deps "$b"
done
for l in "${libs[@]}"; do
	path=$("${LDCONFIG:-/sbin/ldconfig}" -p | awk -v n="$l" '!found && $1 == n && /x86-64|x86_64|AArch64/ { print $NF; found = 1 }')
	[ -n "$path" ] || { echo "rootfs.sh: library $l not installed on this host (apt-get install libopenblas0)" >&2; exit 1; }
	mkdir -p "$out$(dirname "$path")"
	cp -L "$path" "$out$path"
	copy_with_deps "$path"
done
