#!/bin/sh
# Install jobdock on an execution node, as root:
#
#   contrib/install.sh [BINARY]      (default: target/release/jobdock)
#
# - BINARY becomes /usr/local/bin/jobdock, owned by root, mode 4755 (setuid root): users run
#   `jobdock run ...` without being in the docker group; jobdock takes the job's identity from
#   the kernel (the caller's real uid), checks every path the user names as that user, and keeps
#   root only for the commands that talk to dockerd (see README, "The privilege boundary").
# - /etc/jobdock/ is created (root, 0755) and the example config installed as wrapper.toml only
#   if there is none: an existing site config is never overwritten.
# Idempotent: run it again to upgrade the binary. PREFIX (default /usr/local) and CONFDIR
# (default /etc/jobdock) may be set in the environment; jobdock itself always reads
# /etc/jobdock/wrapper.toml.
set -eu

die() { echo "install.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$here/target/release/jobdock}
prefix=${PREFIX:-/usr/local}
confdir=${CONFDIR:-/etc/jobdock}

[ "$(id -u)" -eq 0 ] || die "run as root"
[ -f "$binary" ] && [ -x "$binary" ] || die "$binary: no such executable (build it: cargo build --release)"

install -d -o root -g root -m 0755 "$prefix/bin" "$confdir"
# Copy then rename: a running job keeps its old binary, a new one never sees a half-written file.
install -o root -g root -m 4755 "$binary" "$prefix/bin/.jobdock.new"
mv -f "$prefix/bin/.jobdock.new" "$prefix/bin/jobdock"
echo "install.sh: $prefix/bin/jobdock (setuid root) from $binary"

if [ -e "$confdir/wrapper.toml" ]; then
    echo "install.sh: $confdir/wrapper.toml exists; left as it is"
else
    install -o root -g root -m 0644 "$here/wrapper.toml.example" "$confdir/wrapper.toml"
    echo "install.sh: $confdir/wrapper.toml installed from wrapper.toml.example: review it"
fi
"$prefix/bin/jobdock" check-config "$confdir/wrapper.toml"
