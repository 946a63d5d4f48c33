#!/usr/bin/env bash
# The Debian package of jobdock, as root:
#
#   scripts/build-deb.sh [OUTDIR]       (default: target/debian; prints the package's path)
#
# The files are contrib/install.sh's, staged (DESTDIR) with PREFIX=/usr, so a package and a source
# install cannot drift apart: /usr/bin/jobdock setuid root, /etc/jobdock/wrapper.toml (the
# example; a conffile), the SPANK plugin in /usr/lib/jobdock, the Slurm epilog and prolog in
# /usr/libexec/jobdock, the manual page and bash completion, the systemd units (not enabled), the
# files a site merges into its Slurm, LSF and systemd configuration in /usr/share/jobdock, the
# documentation. This script
# adds only what Debian asks for: the compressed manual page, changelog.gz and copyright, and
# DEBIAN/ (control, conffiles, md5sums, contrib/debian's maintainer scripts), stripped ELF files
# and contrib/debian/lintian-overrides.
#
# JOBDOCK_BINARY and SPANK_PLUGIN name the builds (default target/release/jobdock and
# target/release/libjobdock_spank.so: `cargo build --release --workspace`); DEB_VERSION overrides
# Cargo.toml's version (a test builds an upgrade). The version, description and maintainer come
# from Cargo.toml, the architecture from dpkg, the dependencies from dpkg-shlibdeps.
set -euo pipefail

die() { echo "build-deb.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/debian}
binary=${JOBDOCK_BINARY:-$here/target/release/jobdock}
spank=${SPANK_PLUGIN:-$here/target/release/libjobdock_spank.so}

[[ $(id -u) -eq 0 ]] || die "run as root (contrib/install.sh stages the files setuid root)"
for tool in dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || die "$tool: not found (apt-get install dpkg-dev)"
done
[[ -x $binary ]] || die "JOBDOCK_BINARY=$binary: no such executable (cargo build --release)"
[[ -f $spank ]] || die "SPANK_PLUGIN=$spank: no such file (cargo build --release -p jobdock-spank)"

# manifest_key KEY: the value of `KEY = "..."` in Cargo.toml's [package] table.
manifest_key() {
    sed -n '/^\[package\]$/,/^\[/ s/^'"$1"' = "\(.*\)"$/\1/p' "$here/Cargo.toml"
}
# maintainer: in [package.metadata.deb], where cargo-deb looks for it too.
maintainer=$(sed -n '/^\[package\.metadata\.deb\]$/,/^\[/ s/^maintainer = "\(.*\)"$/\1/p' "$here/Cargo.toml")
version=${DEB_VERSION:-$(manifest_key version)}
description=$(manifest_key description)
[[ -n $version ]] || die "Cargo.toml: no version in [package]"
[[ -n $description ]] || die "Cargo.toml: no description in [package]"
[[ -n $maintainer ]] || die "Cargo.toml: no maintainer in [package.metadata.deb]"
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "version $version is not a Debian native version"
arch=$(dpkg --print-architecture)
# The commit's time for every date in the package, so that the same commit builds the same bytes.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)}

# Under target/, not /tmp: install.sh's check-config refuses a config below a directory others
# can write to, as jobdock does.
install -d -m 0755 "$here/target"
work=$(mktemp -d "$here/target/build-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
install -d -m 0755 "$root" "$root/usr/libexec/jobdock"

# SLURM_CONFDIR=/usr/libexec/jobdock: the epilog and prolog are programs for slurmd alone, where
# upgrades replace them (slurm.conf: Epilog=/usr/libexec/jobdock/jobdock-epilog); /etc/slurm stays
# the site's.
if ! DESTDIR=$root PREFIX=/usr SLURM_CONFDIR=/usr/libexec/jobdock SPANK_PLUGIN=$spank \
    LSF_SERVERDIR='' bash "$here/contrib/install.sh" "$binary" >"$work/install.log" 2>&1; then
    cat "$work/install.log" >&2
    die "contrib/install.sh failed"
fi

# Stripped as Debian ships programs (the symbols would go to a -dbgsym package), in place, keeping
# each file's mode: the setuid bit is install.sh's.
for elf in "$root/usr/bin/jobdock" "$root/usr/lib/jobdock/jobdock_spank.so"; do
    mode=$(stat -c %a "$elf")
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$elf"
    chmod "$mode" "$elf"
done

# The tags lintian reports that are the package's purpose, each with the reason.
install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 "$here/contrib/debian/lintian-overrides" "$root/usr/share/lintian/overrides/jobdock"

doc=$root/usr/share/doc/jobdock
gzip -9n "$root/usr/share/man/man1/jobdock.1"
# A native package's changelog.gz, in Debian's format; the project's own is CHANGELOG.md beside it.
commit=$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
{
    printf 'jobdock (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Built from commit %s; the changes are in CHANGELOG.md.\n\n' "$commit"
    printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"
# The license, as Debian's machine-readable copyright file says it, in place of LICENSE.
{
    printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n'
    printf 'Upstream-Name: jobdock\n\nFiles: *\n'
    printf 'Copyright: %s\n' "$(sed -n 's/^Copyright (c) //p' "$here/LICENSE")"
    printf 'License: Expat\n'
    # The permission text, indented, with "." for an empty line.
    sed -n '/^Permission is hereby granted/,$p' "$here/LICENSE" | sed -e 's/^$/./' -e 's/^/ /'
} >"$doc/copyright"
rm "$doc/LICENSE"
chmod 0644 "$doc/changelog.gz" "$doc/copyright"

# Depends: the shared libraries the two ELF files link, at the versions their symbols need.
install -d "$work/src/debian"
printf 'Source: jobdock\n\nPackage: jobdock\nArchitecture: any\n' >"$work/src/debian/control"
depends=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/bin/jobdock" \
    -e"$root/usr/lib/jobdock/jobdock_spank.so" 2>"$work/shlibdeps.log") \
    || { cat "$work/shlibdeps.log" >&2; die "dpkg-shlibdeps failed"; }
depends=${depends#shlibs:Depends=}
[[ $depends == *libc6* ]] || die "dpkg-shlibdeps found no libc6 dependency: $depends"

install -d -m 0755 "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: jobdock
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Recommends: docker.io
Section: admin
Priority: optional
Description: $description
 jobdock runs each job of LSF or Slurm in a Docker container, as the job's own
 user, with the site's limits: a setuid-root command that users call without
 being in the docker group, and that talks to dockerd itself (Engine API).
 .
 The package has the command (setuid root), the site configuration
 /etc/jobdock/wrapper.toml, the Slurm SPANK plugin (/usr/lib/jobdock),
 epilog and prolog (/usr/libexec/jobdock), the LSF esub and profiles and
 the plugstack line (/usr/share/jobdock), and systemd units for the Docker
 authorization plugin and for pruning images (not enabled).
CONTROL
printf '/etc/jobdock/wrapper.toml\n' >"$root/DEBIAN/conffiles"
install -m 0755 "$here/contrib/debian/postinst" "$here/contrib/debian/postrm" "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f ! -path './etc/*' -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

install -d "$out"
deb=$out/jobdock_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
