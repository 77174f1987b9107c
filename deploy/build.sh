#!/usr/bin/env bash
# Prepares the image's root file system in deploy/rootfs/ so that
# `docker compose up --build` works without pulling any base image: the
# Dockerfile is `FROM scratch` and copies rootfs/ as it is.
#
#   deploy/build.sh          # from anywhere; run again after changing the code
#
# What it stages (all from this machine, nothing downloaded):
#   /app/node-cli            the release binary (cargo build --release -p node-cli), stripped
#   /app/casty.toml          the repository's casty.toml (the working directory finds ./casty.toml)
#   /lib*/...                the exact shared libraries `ldd` names for the binary
#                            (glibc, libm, libgcc_s, the dynamic loader), plus
#                            libnss_files/libnss_dns and their libraries, so that
#                            getaddrinfo resolves `node-1` through /etc/hosts and
#                            Docker's embedded DNS (/etc/resolv.conf, mounted by Docker)
#   /etc/nsswitch.conf       hosts: files dns
#   /etc/passwd, /etc/group  the unprivileged user the container runs as (65532)
#
# A dynamic binary with its own glibc is used rather than a static glibc
# one: a static glibc cannot load NSS modules and warns that getaddrinfo
# needs the shared libraries of the glibc it was linked with.
#
# Environment: CARGO (default cargo); CARGO_TARGET_DIR is honoured.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
stage="$here/rootfs"
cd "$root"

echo "build.sh: cargo build --release -p node-cli" >&2
bin=$(
  "${CARGO:-cargo}" build --release -p node-cli --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
exe = None
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "node-cli" and m.get("executable"):
        exe = m["executable"]
if not exe:
    sys.exit("build.sh: cargo reported no node-cli executable")
print(exe)
'
)
echo "build.sh: staging $bin into $stage" >&2

rm -rf "$stage"
mkdir -p "$stage/app" "$stage/etc"

# Copies an ELF file's shared libraries (as `ldd` resolves them on this
# machine) to the same absolute paths under the stage.
copy_libs() {
  local lib
  # ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
  # "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
  for lib in $(ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    if [ ! -e "$stage$lib" ]; then
      mkdir -p "$stage$(dirname "$lib")"
      cp -L "$lib" "$stage$lib"
    fi
  done
}

strip --strip-all -o "$stage/app/node-cli" "$bin"
cp casty.toml "$stage/app/casty.toml"
copy_libs "$bin"

# NSS modules for host lookups. Since glibc 2.34 `files` and `dns` are built
# into libc.so.6 and these files are small stubs; on an older glibc they
# are the real modules. Either way they sit beside the libc they belong to.
libdir=$(dirname "$(ldd "$bin" | awk '$1 == "libc.so.6" { print $3 }')")
for nss in libnss_files.so.2 libnss_dns.so.2; do
  if [ -e "$libdir/$nss" ]; then
    cp -L "$libdir/$nss" "$stage$libdir/$nss"
    copy_libs "$libdir/$nss"
  fi
done

printf 'hosts: files dns\n' > "$stage/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/sbin/nologin\ncasty:x:65532:65532:casty:/app:/sbin/nologin\n' > "$stage/etc/passwd"
printf 'root:x:0:\ncasty:x:65532:\n' > "$stage/etc/group"
chmod -R a+rX "$stage"

echo "build.sh: staged $(du -sh "$stage" | cut -f1) in $stage; now: cd deploy && docker compose up --build" >&2
