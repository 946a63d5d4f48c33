#!/bin/sh
# Install jobdock on a node, as root:
#
#   contrib/install.sh [BINARY]      (default: target/release/jobdock)
#
# - BINARY becomes $PREFIX/bin/jobdock (PREFIX defaults to /usr/local), owned by root, mode 4755
#   (setuid root): users run `jobdock run ...` without being in the docker group; jobdock takes
#   the job's identity from the kernel (the caller's real uid), checks every path the user names
#   as that user, and keeps root only for the commands that talk to dockerd (see README, "The
#   privilege boundary"). PREFIX and every directory above it must be root's alone, or jobdock
#   refuses to run setuid.
# - /etc/jobdock/ is created (root, 0755) and the example config installed as wrapper.toml only
#   if there is none: an existing site config is never overwritten. jobdock reads no other
#   config, so the directory cannot be moved (CONFDIR other than /etc/jobdock is refused).
# - Slurm: where $SLURM_CONFDIR (default /etc/slurm) is a directory, contrib/slurm/epilog and
#   prolog become $SLURM_CONFDIR/jobdock-epilog and jobdock-prolog (root, 0755), and the SPANK
#   plugin, built beforehand (`cargo build --release -p jobdock-spank`; SPANK_PLUGIN names another
#   build), becomes $PREFIX/lib/jobdock/jobdock_spank.so (root, 0644), the path
#   contrib/slurm/plugstack.conf names. The plugstack line itself is the site's to add (printed
#   below): it is `required`, and takes effect on the next srun.
# - LSF: where LSF_SERVERDIR is set, contrib/lsf/esub.docker becomes $LSF_SERVERDIR/esub.docker.
#   Each installed script names $PREFIX/bin/jobdock.
# - The manual page and bash completion, written by the installed jobdock itself (`jobdock man`,
#   `jobdock completions bash`): $PREFIX/share/man/man1/jobdock.1 and
#   $PREFIX/share/bash-completion/completions/jobdock.
# - The systemd units of contrib/systemd (the authorization plugin, the prune service and its
#   timer) in $PREFIX/lib/systemd/system, which systemd reads for /usr/local and /usr alike; none
#   is enabled. The files a site merges into its own configuration, in $PREFIX/share/jobdock:
#   slurm/plugstack.conf, lsf/lsb.applications, lsf/lsb.queues, lsf/esub.docker,
#   systemd/docker.service.d/jobdock-authz.conf and authz/make-certs.sh. The documentation
#   (README.md, SECURITY.md, CHANGELOG.md, LICENSE) in $PREFIX/share/doc/jobdock. Every installed
#   file names the installed paths ($PREFIX/bin/jobdock, $PREFIX/lib/jobdock, ...), never the
#   /usr/local of the checkout's copies. scripts/build-deb.sh makes the Debian package from this
#   install (PREFIX=/usr, staged with DESTDIR).
# - Then `jobdock check-config` (an invalid config fails the install) and, on the live node,
#   `jobdock doctor`, whose findings are shown but do not fail the install (a node is often
#   installed before dockerd is set up); fix what it reports before running jobs.
#
# DESTDIR stages the whole install under another root (a node image, a test): files go to
# $DESTDIR$PREFIX, $DESTDIR/etc/jobdock, ..., the scripts still name $PREFIX/bin/jobdock, and
# doctor is not run. Idempotent: run it again to upgrade; a running job keeps its old binary.
set -eu

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

here=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$here/target/release/jobdock}
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
confdir=/etc/jobdock
slurm_confdir=${SLURM_CONFDIR:-/etc/slurm}
lsf_serverdir=${LSF_SERVERDIR:-}
spank_plugin=${SPANK_PLUGIN:-$here/target/release/libjobdock_spank.so}

[ "$(id -u)" -eq 0 ] || die "run as root"
[ "${CONFDIR:-$confdir}" = "$confdir" ] ||
    die "CONFDIR=$CONFDIR: jobdock reads only $confdir/wrapper.toml, so a config elsewhere would never be read; unset CONFDIR (DESTDIR stages an install under another root)"
case $prefix in
    /*) ;;
    *) die "PREFIX=$prefix is not an absolute path" ;;
esac
prefix=${prefix%/}
case $prefix$destdir in
    *[!A-Za-z0-9/._-]*) die "PREFIX and DESTDIR may hold only letters, digits and / . _ -" ;;
esac
[ -z "$destdir" ] || [ -d "$destdir" ] || die "DESTDIR=$destdir is not a directory"
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    die "$binary: no such executable (build it: cargo build --release)"
fi

jobdock=$prefix/bin/jobdock
spank_so=$prefix/lib/jobdock/jobdock_spank.so

# Copies file $1 of the checkout to $2 with mode $3 (0755 for a script), naming the installed
# jobdock, plugin directory and documentation instead of the checkout's /usr/local ones; copy then
# rename, so a hook never runs a half-written file.
install_file() {
    sed -e "s|/usr/local/bin/jobdock|$jobdock|g" \
        -e "s|/usr/local/lib/jobdock/|$prefix/lib/jobdock/|g" \
        -e "s|/usr/local/share/doc/jobdock/|$prefix/share/doc/jobdock/|g" "$1" >"$2.new"
    chown root:root "$2.new"
    chmod "$3" "$2.new"
    mv -f "$2.new" "$2"
    say "$2 from ${1#"$here"/}"
}
install_script() { install_file "$1" "$2" 0755; }

install -d -o root -g root -m 0755 "$destdir$prefix/bin" "$destdir$confdir"
# Copy then rename: a running job keeps its old binary, a new one never sees a half-written file.
install -o root -g root -m 4755 "$binary" "$destdir$jobdock.new"
mv -f "$destdir$jobdock.new" "$destdir$jobdock"
say "$destdir$jobdock (setuid root) from $binary"

if [ -e "$destdir$confdir/wrapper.toml" ]; then
    say "$destdir$confdir/wrapper.toml exists; left as it is"
else
    install -o root -g root -m 0644 "$here/wrapper.toml.example" "$destdir$confdir/wrapper.toml"
    # The example is a working config for a model site: it allows more than the built-in defaults.
    say "$destdir$confdir/wrapper.toml installed from wrapper.toml.example: review it; unlike the built-in defaults it allows volumes under /gpfs and /scratch (mounts.allowed_roots), /dev/infiniband/* (devices.paths) and published ports 8000-8999 (ports.range)"
fi
"$destdir$jobdock" check-config "$destdir$confdir/wrapper.toml"

# Written by the binary just installed, so the page always matches it. Copy then rename.
man_dir=$destdir$prefix/share/man/man1
completion_dir=$destdir$prefix/share/bash-completion/completions
install -d -o root -g root -m 0755 "$man_dir" "$completion_dir"
"$destdir$jobdock" man >"$man_dir/jobdock.1.new"
chmod 0644 "$man_dir/jobdock.1.new"
mv -f "$man_dir/jobdock.1.new" "$man_dir/jobdock.1"
say "$man_dir/jobdock.1 (man jobdock)"
"$destdir$jobdock" completions bash >"$completion_dir/jobdock.new"
chmod 0644 "$completion_dir/jobdock.new"
mv -f "$completion_dir/jobdock.new" "$completion_dir/jobdock"
say "$completion_dir/jobdock (bash completion)"

unit_dir=$destdir$prefix/lib/systemd/system
share_dir=$destdir$prefix/share/jobdock
doc_dir=$destdir$prefix/share/doc/jobdock
install -d -o root -g root -m 0755 "$unit_dir" "$share_dir/slurm" "$share_dir/lsf" \
    "$share_dir/systemd/docker.service.d" "$share_dir/authz" "$doc_dir"
for unit in jobdock-authz.service jobdock-prune.service jobdock-prune.timer; do
    install_file "$here/contrib/systemd/$unit" "$unit_dir/$unit" 0644
done
install_file "$here/contrib/slurm/plugstack.conf" "$share_dir/slurm/plugstack.conf" 0644
for file in lsb.applications lsb.queues; do
    install_file "$here/contrib/lsf/$file" "$share_dir/lsf/$file" 0644
done
install_script "$here/contrib/lsf/esub.docker" "$share_dir/lsf/esub.docker"
install_file "$here/contrib/systemd/docker.service.d/jobdock-authz.conf" \
    "$share_dir/systemd/docker.service.d/jobdock-authz.conf" 0644
install_script "$here/contrib/authz/make-certs.sh" "$share_dir/authz/make-certs.sh"
for file in README.md SECURITY.md CHANGELOG.md LICENSE; do
    install_file "$here/$file" "$doc_dir/$file" 0644
done

slurm=
spank=
if [ -d "$destdir$slurm_confdir" ]; then
    slurm=yes
    install_script "$here/contrib/slurm/epilog" "$destdir$slurm_confdir/jobdock-epilog"
    install_script "$here/contrib/slurm/prolog" "$destdir$slurm_confdir/jobdock-prolog"
    if [ -f "$spank_plugin" ]; then
        install -d -o root -g root -m 0755 "$destdir${spank_so%/*}"
        # Copy then rename: a running srun or slurmstepd keeps the plugin it loaded.
        install -o root -g root -m 0644 "$spank_plugin" "$destdir$spank_so.new"
        mv -f "$destdir$spank_so.new" "$destdir$spank_so"
        say "$destdir$spank_so (SPANK plugin) from $spank_plugin"
        spank=yes
    elif [ -n "${SPANK_PLUGIN:-}" ]; then
        die "SPANK_PLUGIN=$SPANK_PLUGIN: no such file"
    else
        say "no SPANK plugin at $spank_plugin (cargo build --release -p jobdock-spank): srun --container-image not installed"
    fi
else
    say "no $destdir$slurm_confdir: not a Slurm node, no epilog installed (SLURM_CONFDIR names another)"
fi
if [ -n "$lsf_serverdir" ]; then
    [ -d "$destdir$lsf_serverdir" ] || die "LSF_SERVERDIR=$lsf_serverdir: no such directory"
    install_script "$here/contrib/lsf/esub.docker" "$destdir$lsf_serverdir/esub.docker"
fi

echo
echo "Next steps:"
if [ -n "$slurm" ]; then
    cat <<EOF
- Slurm (contrib/slurm/README.md), in slurm.conf on every node:
      Epilog=$slurm_confdir/jobdock-epilog
      Prolog=$slurm_confdir/jobdock-prolog      (optional)
  (or call \`$jobdock cleanup --job "\$SLURM_JOB_ID"\` from the epilog the site already has),
  then \`scontrol reconfigure\`. Changes to ProctrackType, TaskPlugin, SelectType or cgroup.conf
  need slurmctld and every slurmd restarted instead (\`systemctl restart slurmctld\`, then
  \`systemctl restart slurmd\` on each node).
EOF
    if [ -n "$spank" ]; then
        cat <<EOF
- srun/sbatch --container-image (contrib/slurm/plugstack.conf): on every node and submit host,
  in plugstack.conf (Debian: $slurm_confdir/plugstack.conf.d/jobdock.conf), the line
      required $spank_so jobdock=$jobdock enforce=0 sbatch=1
  then restart slurmd on each node; srun and sbatch read it on their next call.
EOF
    fi
fi
if [ -n "$lsf_serverdir" ] || [ -z "$slurm" ]; then
    cat <<EOF
- LSF (contrib/lsf/README.md): every submission host needs jobdock, $confdir/wrapper.toml
  and esub.docker in \$LSF_SERVERDIR (this script installs it when LSF_SERVERDIR is set); merge
  the docker profile of contrib/lsf/lsb.applications (or the queue of lsb.queues), with:
      JOB_STARTER  = exec $jobdock lsf-starter;
      POST_EXEC    = $jobdock cleanup
  then \`badmin reconfig\`; the boolean resource \`docker\` for the hosts that have jobdock
  (lsf.shared, lsf.cluster.<name>), then \`lsadmin reconfig\` and \`badmin mbdrestart\`.
EOF
fi

if [ -n "$destdir" ]; then
    echo "- On the node itself: \`$jobdock doctor\` (as root) checks it."
    exit 0
fi
echo
if "$jobdock" doctor; then
    say "jobdock doctor found nothing wrong"
else
    say "jobdock doctor found problems (FAIL above): the install is done, but fix them before running jobs here"
fi
