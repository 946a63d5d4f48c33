#!/usr/bin/env bash
# jobdock Slurm test bed: munged, slurmctld and slurmd for a one-node cluster
# "jobdock" on this machine (Debian, cgroup v1, no systemd), with --mem
# enforced through the memory cgroup; and next to it a second, independent
# one-node cluster "jobdock-tmpfs" (own config in /etc/slurm-tmpfs, own ports,
# state and daemons, same munged) with JobContainerType=job_container/tmpfs:
# each of its jobs runs in a mount namespace of its own, with a private /tmp
# and /dev/shm. Submit to it with SLURM_CONF=/etc/slurm-tmpfs/slurm.conf.
#
#   scripts/slurm-testbed.sh [up] [--no-verify]  bring all four up (idempotent), then verify
#   scripts/slurm-testbed.sh verify              only the end-to-end checks
#   scripts/slurm-testbed.sh down                stop every cluster's slurmd and slurmctld, and munged
#   scripts/slurm-testbed.sh status              report; exit 1 if a daemon or a node is not up
#   scripts/slurm-testbed.sh mpi-up [--no-verify]  only the two-node MPI cluster "jobdock-mpi"
#   scripts/slurm-testbed.sh mpi-down | mpi-status | mpi-verify   the same, for it alone
#   scripts/slurm-testbed.sh enforce-up [--no-verify]  only the cluster "jobdock-enforce"
#   scripts/slurm-testbed.sh enforce-down | enforce-status | enforce-verify   the same, for it alone
#
# The third cluster, "jobdock-mpi" (SLURM_CONF=/etc/slurm-mpi/slurm.conf), has two nodes n1 and
# n2 on this host (one slurmd each, -N n1 / -N n2, own ports, spool dirs and TmpFS), PMIx
# (mpi/pmix_v4 with Debian's libpmix2) as its default MPI plugin, and its own job ids. Its
# commands never stop, start or reconfigure the other clusters' daemons.
#
# The fourth, "jobdock-enforce" (SLURM_CONF=/etc/slurm-enforce/slurm.conf), is one node whose
# plugstack (PlugStackConfig, a file of its own) has the package's jobdock plugin line with the
# settings a site that contains every job uses: enforce=1 sbatch=0
# default_image=jobdock-test/busybox:latest. Its commands, too, touch no other cluster's daemons.
#
# Must run as root. Each step prints one "slurm-testbed: ..." line; noisy
# output goes to files in $LOG_DIR. Needs scripts/testbed.sh (dockerd, the
# jobdock-test/busybox image and the users jdalice/jdbob); runs it when
# something it provides is missing.
set -euo pipefail

# ---------------------------------------------------------------- settings --
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
TESTBED_SH=$SCRIPT_DIR/testbed.sh

LOG_DIR=/var/log/jobdock-testbed
RUN_DIR=/run/jobdock-testbed
LOCK=$RUN_DIR/slurm-testbed.lock
APT_LOG=$LOG_DIR/slurm-apt.log
VERIFY_LOG=$LOG_DIR/slurm-verify.log
TESTBED_LOG=$LOG_DIR/slurm-testbed-deps.log

SLURM_PACKAGES=(slurmctld slurmd slurm-client munge)
POLICY_RC_D=/usr/sbin/policy-rc.d     # keeps package postinst from starting daemons

# munge (Debian's paths; munged runs as the "munge" user made by the package)
MUNGE_USER=munge
MUNGED_BIN=/usr/sbin/munged
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN_DIR=/run/munge
MUNGE_SOCKET=$MUNGE_RUN_DIR/munge.socket.2
MUNGED_PIDFILE=$MUNGE_RUN_DIR/munged.pid   # written by munged itself
MUNGED_LOG=$LOG_DIR/munged.log

# Slurm (Debian's paths; slurmctld runs as the "slurm" user made by the package)
SLURM_USER=slurm
SLURM_CLUSTER=jobdock
SLURM_PARTITION=debug
SLURM_CONF_DIR=/etc/slurm
SLURM_CONF_PATH=$SLURM_CONF_DIR/slurm.conf
CGROUP_CONF=$SLURM_CONF_DIR/cgroup.conf
SLURMCTLD_BIN=/usr/sbin/slurmctld
SLURMD_BIN=/usr/sbin/slurmd
SLURMCTLD_PIDFILE=/run/slurmctld.pid       # written by the daemons themselves
SLURMD_PIDFILE=/run/slurmd.pid
SLURM_STATE_DIR=/var/lib/slurm/slurmctld   # StateSaveLocation
SLURMD_SPOOL_DIR=/var/lib/slurm/slurmd     # SlurmdSpoolDir
# slurmctld (as $SLURM_USER) chdirs to its log file's directory: give it one of its own.
SLURM_LOG_DIR=$LOG_DIR/slurm
SLURMCTLD_LOG=$SLURM_LOG_DIR/slurmctld.log
SLURMD_LOG=$SLURM_LOG_DIR/slurmd.log
SLURM_PLUGIN_DIR=/usr/lib/x86_64-linux-gnu/slurm-wlm
SLURM_LIB=/usr/lib/x86_64-linux-gnu/slurm-wlm/libslurmfull.so
# Memory kept back from Slurm for the OS, dockerd and the daemons:
# max(MEM_HEADROOM_MIN_MB, MEM_HEADROOM_PERCENT% of the machine).
MEM_HEADROOM_MIN_MB=1024
MEM_HEADROOM_PERCENT=10
DEF_MEM_PER_CPU_MB=512                     # a job without --mem gets this per CPU
SLURM_WAIT=${SLURM_TESTBED_WAIT:-60}       # seconds for daemons / node to come up

# jobdock's Slurm epilog: the Debian package's (scripts/test.sh installs it first), which names
# the installed /usr/bin/jobdock. Configured as Epilog= only when the file exists and is
# executable; otherwise slurm.conf carries a commented placeholder. Override with
# SLURM_EPILOG=/path scripts/slurm-testbed.sh up. Not exported: srun reads an
# environment variable of this name as its own --epilog.
SLURM_EPILOG=${SLURM_EPILOG:-/usr/libexec/jobdock/jobdock-epilog}
export -n SLURM_EPILOG

# jobdock's SPANK plugin on the main cluster (srun/sbatch --container-image): the Debian
# package's (dpkg owns it: this script only checks it is there), under the plugstack line the
# package ships (SPANK_PLUGSTACK_LINE),
# in a plugstack.conf.d file of its own (Debian's plugstack.conf includes them; the other
# clusters' slurm.conf live elsewhere and read no plugstack). Next to it the test build
# (--features test-hooks: plugin_name jobdock_test, only the option --jobdock-test-panic=HOOK).
# scripts/test.sh installs the package and builds the test build first; `up` builds the test build
# if it is missing.
SPANK_TEST_TARGET=$REPO_ROOT/target/spank-test-hooks
SPANK_TEST_BUILD=$SPANK_TEST_TARGET/release/libjobdock_spank.so
SPANK_SO=/usr/lib/jobdock/jobdock_spank.so
SPANK_PLUGSTACK_LINE=/usr/share/jobdock/slurm/plugstack.conf
SPANK_SUM=/var/lib/jobdock-testbed/jobdock_spank.so.sha256   # the plugin slurmd last started with
SPANK_TEST_SO=/usr/local/lib/jobdock-test/jobdock_spank_test.so
SPANK_PLUGSTACK=$SLURM_CONF_DIR/plugstack.conf.d/jobdock.conf
SPANK_LOG=$LOG_DIR/slurm-spank-build.log

# The job_container/tmpfs cluster. JobContainerType (and the PrologFlags=Contain
# it goes with) is cluster-wide in slurm.conf, and Slurm 22.05's tmpfs plugin
# fails to load on a node that job_container.conf has no BasePath for (later
# versions disable it there): so not a node of the cluster above, whose jobs
# must keep the host's /tmp, but a second cluster with nothing in common with
# it but munged and the host. Debian builds Slurm with --enable-multiple-slurmd:
# the node's slurmd is started with -N, its cgroups are /slurm_<node>, and the
# plugin appends /<node> to BasePath.
TMPFS_CLUSTER=jobdock-tmpfs
TMPFS_PARTITION=tmpfs
TMPFS_CONF_DIR=/etc/slurm-tmpfs
TMPFS_CONF_PATH=$TMPFS_CONF_DIR/slurm.conf          # what tests set SLURM_CONF to
TMPFS_CGROUP_CONF=$TMPFS_CONF_DIR/cgroup.conf
TMPFS_JC_CONF=$TMPFS_CONF_DIR/job_container.conf
TMPFS_SLURMCTLD_PORT=6827                           # the main cluster has Slurm's 6817/6818
TMPFS_SLURMD_PORT=6828
TMPFS_SLURMCTLD_PIDFILE=/run/slurmctld-tmpfs.pid
TMPFS_SLURMD_PIDFILE=/run/slurmd-tmpfs.pid
TMPFS_STATE_BASE=/var/lib/jobdock-testbed/slurm-tmpfs
TMPFS_STATE_DIR=$TMPFS_STATE_BASE/slurmctld         # StateSaveLocation
TMPFS_SPOOL_DIR=$TMPFS_STATE_BASE/slurmd            # SlurmdSpoolDir
TMPFS_BASEPATH=$TMPFS_STATE_BASE/jobs               # job_container.conf BasePath (+ /<node>)
TMPFS_LOG_DIR=$LOG_DIR/slurm-tmpfs
TMPFS_SLURMCTLD_LOG=$TMPFS_LOG_DIR/slurmctld.log
TMPFS_SLURMD_LOG=$TMPFS_LOG_DIR/slurmd.log
# Job ids of the two clusters never meet: the epilog removes the containers
# labelled with its job id, whichever cluster started them.
TMPFS_FIRST_JOB_ID=50000000

# The two-node MPI cluster (issue 14): nodes n1 and n2 are two slurmd on this host
# (--enable-multiple-slurmd: NodeHostname=this host, Port= each, slurmd -N), so one dockerd
# serves both, as a real cluster's containers never would: jobdock's names and labels carry the
# cluster and the node. PMIx (mpi/pmix_v4) needs Debian's libpmix2, which the slurm packages do
# not pull in, installed before slurmd starts (else --mpi=pmix hangs or fails). Each node has
# its own TmpFS (%n): two nodes' PMIx steps in one /tmp collide.
MPI_CLUSTER=jobdock-mpi
MPI_PARTITION=mpi
MPI_CONF_DIR=/etc/slurm-mpi
MPI_CONF_PATH=$MPI_CONF_DIR/slurm.conf              # what tests set SLURM_CONF to
MPI_CGROUP_CONF=$MPI_CONF_DIR/cgroup.conf
MPI_NODES=(n1 n2)
MPI_SLURMCTLD_PORT=6837                             # main 6817/6818, tmpfs 6827/6828
MPI_SLURMD_PORT_BASE=6838                           # n1 6838, n2 6839
MPI_SLURMCTLD_PIDFILE=/run/slurmctld-mpi.pid
MPI_STATE_BASE=/var/lib/jobdock-testbed/slurm-mpi
MPI_STATE_DIR=$MPI_STATE_BASE/slurmctld             # StateSaveLocation
MPI_SPOOL_BASE=$MPI_STATE_BASE/slurmd               # SlurmdSpoolDir = .../%n
MPI_TMPFS_BASE=$MPI_STATE_BASE/tmp                  # TmpFS = .../%n
MPI_LOG_DIR=$LOG_DIR/slurm-mpi
MPI_SLURMCTLD_LOG=$MPI_LOG_DIR/slurmctld.log
MPI_FIRST_JOB_ID=60000000
# Its daemons run under names of their own (symlinks to Slurm's binaries): a process named
# slurmd or slurmctld without "-f" of a known config is the main cluster's to every copy of
# this script, including the ones older than this cluster.
MPI_BIN_DIR=/usr/local/lib/jobdock-testbed
MPI_SLURMCTLD_COMM="slurmctld-mpi"
MPI_SLURMD_COMM="slurmd-mpi"
# openssh: the MPI image's sshd and ssh (the virtual cluster, issue 14.4); policy-rc.d keeps the
# package from starting the host's sshd.
MPI_PACKAGES=(libpmix2 openmpi-bin libopenmpi-dev openssh-client openssh-server)
# The MPI test image: busybox plus the host's OpenMPI/PMIx (the same build as slurmd's PMIx
# plugin talks to) and scripts/mpi/{hello,pingpong}.c compiled with the host's mpicc. Rebuilt only
# when its recipe (this function, the sources, the host's package versions) changes.
MPI_IMAGE=jobdock-test/mpi:latest
MPI_SRC_DIR=$REPO_ROOT/scripts/mpi
MPI_RECIPE_LABEL=jobdock.testbed.recipe

# mpi_slurmd_pidfile NODE / mpi_slurmd_log NODE: SlurmdPidFile and SlurmdLogFile with %n.
mpi_slurmd_pidfile() { printf '/run/slurmd-mpi-%s.pid' "$1"; }
mpi_slurmd_log() { printf '%s/slurmd-%s.log' "$MPI_LOG_DIR" "$1"; }

# verification
VERIFY_USER=jdalice
VERIFY_UID=2001
VERIFY_MEM=64M
VERIFY_MEM_BYTES=67108864
# The docker daemon for the cgroup-parent check: scripts/testbed.sh's, unless
# SLURM_TESTBED_DOCKER_SOCK names another one (which must already have
# $VERIFY_IMAGE).
DOCKER_SOCK=${SLURM_TESTBED_DOCKER_SOCK:-/var/run/docker.sock}
VERIFY_IMAGE=jobdock-test/busybox:latest

# The enforce cluster (issue 16): enforce=1 is the plugstack line's, and so the whole cluster's,
# which the other clusters cannot take (the main one's tests run bare steps next to container
# ones, the tmpfs one's own checks run bare steps). One node on this host (slurmd -N), its own
# ports, paths and job ids, its own plugstack named by PlugStackConfig (not Debian's
# /etc/slurm/plugstack.conf, which includes the main cluster's jobdock.conf).
# PrologFlags=Contain gives its jobs an extern step, which the plugin must leave bare.
ENFORCE_CLUSTER=jobdock-enforce
ENFORCE_PARTITION=enforce
ENFORCE_CONF_DIR=/etc/slurm-enforce
ENFORCE_CONF_PATH=$ENFORCE_CONF_DIR/slurm.conf          # what tests set SLURM_CONF to
ENFORCE_CGROUP_CONF=$ENFORCE_CONF_DIR/cgroup.conf
ENFORCE_PLUGSTACK=$ENFORCE_CONF_DIR/plugstack.conf
ENFORCE_SETTINGS="enforce=1 sbatch=0 default_image=$VERIFY_IMAGE"
ENFORCE_SLURMCTLD_PORT=6847                             # main 6817/6818, tmpfs 6827/6828, mpi 6837-6839
ENFORCE_SLURMD_PORT=6848
ENFORCE_SLURMCTLD_PIDFILE=/run/slurmctld-enforce.pid
ENFORCE_SLURMD_PIDFILE=/run/slurmd-enforce.pid
ENFORCE_STATE_BASE=/var/lib/jobdock-testbed/slurm-enforce
ENFORCE_STATE_DIR=$ENFORCE_STATE_BASE/slurmctld         # StateSaveLocation
ENFORCE_SPOOL_DIR=$ENFORCE_STATE_BASE/slurmd            # SlurmdSpoolDir
# The plugin its slurmd last started with: the main cluster's $SPANK_SUM is that one's.
ENFORCE_SPANK_SUM=$ENFORCE_STATE_BASE/jobdock_spank.so.sha256
ENFORCE_LOG_DIR=$LOG_DIR/slurm-enforce
ENFORCE_SLURMCTLD_LOG=$ENFORCE_LOG_DIR/slurmctld.log
ENFORCE_SLURMD_LOG=$ENFORCE_LOG_DIR/slurmd.log
ENFORCE_FIRST_JOB_ID=40000000                       # below MaxJobId (67043328), as the others are
# Names of their own, as the MPI cluster's (see MPI_BIN_DIR), within the kernel's 15 characters
# of a process name ("slurmctld-enforce" would be cut to "slurmctld-enfor").
ENFORCE_SLURMCTLD_COMM="slurmctld-enf"
ENFORCE_SLURMD_COMM="slurmd-enf"

# ----------------------------------------------------------------- helpers --
LIB_NAME=slurm-testbed
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
unset SLURM_CONF   # always the default /etc/slurm/slurm.conf, as users' commands see it

NODE=$(hostname -s)
TMPFS_NODE=${NODE}tmpfs
ENFORCE_NODE=${NODE}enforce

# The other clusters' slurmctld and slurmd run with "-f THEIR_CONF", the main
# cluster's without: the tmpfs cluster's, too, are processes named slurmctld and slurmd.
runs_conf() {
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF -- "$2"
}
runs_tmpfs_conf() { runs_conf "$1" "$TMPFS_CONF_PATH"; }

# runs_node PID NODE: PID was started with "-N NODE".
runs_node() {
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -A1 -xF -- -N | sed -n 2p | grep -qxF -- "$2"
}

# cluster_pid_is PID COMM main|tmpfs|mpi|mpi:NODE|enforce: PID is that cluster's (node's) live
# COMM.
cluster_pid_is() {
  pid_is "$1" "$2" || return 1
  case $2 in
    slurmctld | slurmd | "$MPI_SLURMCTLD_COMM" | "$MPI_SLURMD_COMM") ;;
    "$ENFORCE_SLURMCTLD_COMM" | "$ENFORCE_SLURMD_COMM") ;;
    *) return 0 ;;
  esac
  case $3 in
    tmpfs) runs_tmpfs_conf "$1" ;;
    mpi) runs_conf "$1" "$MPI_CONF_PATH" ;;
    mpi:*) runs_conf "$1" "$MPI_CONF_PATH" && runs_node "$1" "${3#mpi:}" ;;
    enforce) runs_conf "$1" "$ENFORCE_CONF_PATH" ;;
    *) ! runs_tmpfs_conf "$1" && ! runs_conf "$1" "$MPI_CONF_PATH" && ! runs_conf "$1" "$ENFORCE_CONF_PATH" ;;
  esac
}

# daemon_pid PIDFILE COMM [main|tmpfs]: pid of the live daemon named COMM (of
# that cluster; default main), from its pid file or, if that is stale or
# missing, the first process of that name and cluster.
daemon_pid() {
  local which=${3:-main} pid
  pid=$(pidfile_pid "$1")
  if cluster_pid_is "$pid" "$2" "$which"; then printf '%s' "$pid"; return 0; fi
  for pid in $(pgrep -x "$2" 2>/dev/null || true); do
    if cluster_pid_is "$pid" "$2" "$which"; then printf '%s' "$pid"; return 0; fi
  done
  return 0
}

make_dirs() { install -d -m 0755 "$LOG_DIR" "$RUN_DIR"; }

# The lock is fd 8; every daemon is started with fd 8 closed so that it
# cannot inherit (and keep holding) the lock after this script exits.
take_lock() {
  exec 8>"$LOCK"
  flock -w 600 8 || die "another slurm-testbed.sh holds $LOCK"
}

WORK_DIR=""
make_work_dir() {
  [[ -n $WORK_DIR ]] && return 0
  WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/jobdock-slurm-testbed.XXXXXX")
  chmod 0755 "$WORK_DIR"
  CLEANUP_PATHS+=("$WORK_DIR")
}

# --------------------------------------------------------------- packages --
slurm_version() {
  dpkg-query -W -f='${Version}' slurmd 2>/dev/null || echo '?'
}

# ------------------------------------------------------------ prerequisites --
docker_answers() {
  [[ -S $DOCKER_SOCK ]] \
    && [[ $(curl -fsS --max-time 5 --unix-socket "$DOCKER_SOCK" http://localhost/_ping 2>/dev/null) == OK ]]
}

# dk ARGS...: a docker client that talks to $DOCKER_SOCK.
dk() { DOCKER_HOST=unix://$DOCKER_SOCK docker "$@"; }

ensure_testbed() {
  local why=()
  id -u "$VERIFY_USER" >/dev/null 2>&1 || why+=("user $VERIFY_USER missing")
  if ! command -v curl >/dev/null 2>&1 || ! docker_answers; then
    why+=("dockerd not answering")
  elif ! dk image inspect "$VERIFY_IMAGE" >/dev/null 2>&1; then
    why+=("image $VERIFY_IMAGE missing")
  fi
  if ((${#why[@]} == 0)); then
    say "test bed present: dockerd ($DOCKER_SOCK), $VERIFY_IMAGE, $VERIFY_USER"
    return 0
  fi
  if [[ $DOCKER_SOCK != /var/run/docker.sock ]]; then
    die "${why[*]} (SLURM_TESTBED_DOCKER_SOCK=$DOCKER_SOCK is not scripts/testbed.sh's daemon)"
  fi
  [[ -x $TESTBED_SH || -f $TESTBED_SH ]] || die "${why[*]}; and $TESTBED_SH is missing"
  say "running scripts/testbed.sh up (${why[*]}; log: $TESTBED_LOG)"
  run_logged "$TESTBED_LOG" bash "$TESTBED_SH" up 8>&-
}

# ------------------------------------------------------------------- munge --
munge_works() {
  local cred
  cred=$(munge -n -S "$MUNGE_SOCKET" 2>/dev/null) || return 1
  unmunge -S "$MUNGE_SOCKET" <<<"$cred" >/dev/null 2>&1
}

ensure_munge_key() {
  install -d -m 0700 -o "$MUNGE_USER" -g "$MUNGE_USER" /etc/munge
  if [[ -s $MUNGE_KEY ]]; then
    chown "$MUNGE_USER:$MUNGE_USER" "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    say "munge key present ($MUNGE_KEY)"
    return 0
  fi
  rm -f "$MUNGE_KEY"
  run_logged "$MUNGED_LOG" runuser -u "$MUNGE_USER" -- mungekey --create --keyfile "$MUNGE_KEY"
  chown "$MUNGE_USER:$MUNGE_USER" "$MUNGE_KEY"
  chmod 0400 "$MUNGE_KEY"
  say "munge key created ($MUNGE_KEY, $(stat -c '%U:%G %a' "$MUNGE_KEY"))"
}

ensure_munged() {
  local pid offset deadline
  pid=$(daemon_pid "$MUNGED_PIDFILE" munged)
  if [[ -n $pid ]] && munge_works; then
    say "munged running (pid $pid; munge -n | unmunge ok)"
    return 0
  fi
  if [[ -n $pid ]]; then
    say "munged pid $pid does not answer; restarting it"
    stop_pid "$pid" munged munged 10
  fi
  # Left behind by a killed munged (munged itself would also replace a socket
  # whose lock file nobody holds; removing them keeps status honest).
  local f removed=()
  for f in "$MUNGED_PIDFILE" "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"; do
    if [[ -e $f ]]; then rm -f "$f"; removed+=("$f"); fi
  done
  if ((${#removed[@]})); then say "removed stale munge files: ${removed[*]}"; fi
  install -d -m 0755 -o "$MUNGE_USER" -g "$MUNGE_USER" "$MUNGE_RUN_DIR"
  install -d -m 0711 -o "$MUNGE_USER" -g "$MUNGE_USER" /var/lib/munge
  install -d -m 0700 -o "$MUNGE_USER" -g "$MUNGE_USER" /var/log/munge
  touch "$MUNGED_LOG"
  chown "$MUNGE_USER:$MUNGE_USER" "$MUNGED_LOG"
  chmod 0640 "$MUNGED_LOG"
  offset=$(file_size "$MUNGED_LOG")
  printf '=== %s slurm-testbed: starting %s\n' "$(date -u +%FT%TZ)" "$MUNGED_BIN" >>"$MUNGED_LOG"
  # munged daemonizes itself and writes $MUNGED_PIDFILE.
  if ! start-stop-daemon --start --quiet --chuid "$MUNGE_USER" --exec "$MUNGED_BIN" -- \
    --socket="$MUNGE_SOCKET" --pid-file="$MUNGED_PIDFILE" --log-file="$MUNGED_LOG" \
    </dev/null >>"$MUNGED_LOG" 2>&1 8>&-; then
    tail_log "$MUNGED_LOG" "$offset"
    die "munged did not start (log: $MUNGED_LOG)"
  fi
  deadline=$((SECONDS + 15))
  until munge_works; do
    if ((SECONDS >= deadline)); then
      tail_log "$MUNGED_LOG" "$offset"
      die "munged does not answer on $MUNGE_SOCKET (munge -n | unmunge fails)"
    fi
    sleep 0.2
  done
  say "munged started (pid $(pidfile_pid "$MUNGED_PIDFILE"); munge -n | unmunge ok; log $MUNGED_LOG)"
}

# ------------------------------------------------------------------ config --
# The node's hardware line as slurmd sees it (CPUs, Boards, Sockets, Cores,
# Threads), so the configured node matches what slurmd registers and is not
# drained for "Low socket*core*thread count".
node_hw() {
  local line
  line=$("$SLURMD_BIN" -C 2>/dev/null | head -n 1 || true)
  line=$(tr ' ' '\n' <<<"$line" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ' || true)
  [[ $line == *CPUs=* ]] || line="CPUs=$(nproc) "
  printf '%s' "${line% }"
}

node_real_memory_mb() {
  local total headroom
  total=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  headroom=$((total * MEM_HEADROOM_PERCENT / 100))
  ((headroom >= MEM_HEADROOM_MIN_MB)) || headroom=$MEM_HEADROOM_MIN_MB
  ((total > headroom + 256)) || die "only ${total} MB of memory; too little for a test node"
  printf '%s' $((total - headroom))
}

# Slurm < 22.05 has no CgroupPlugin key in cgroup.conf (and would refuse it).
slurm_knows_cgroup_plugin() {
  [[ -e $SLURM_PLUGIN_DIR/cgroup_v1.so ]] && grep -qa 'CgroupPlugin' "$SLURM_LIB" 2>/dev/null
}

epilog_line() {
  if [[ -n $SLURM_EPILOG && -f $SLURM_EPILOG && -x $SLURM_EPILOG ]]; then
    printf 'Epilog=%s\n' "$SLURM_EPILOG"
  else
    printf '#Epilog=%s   # placeholder: not an executable file yet (set SLURM_EPILOG)\n' "$SLURM_EPILOG"
  fi
}

write_slurm_conf() {
  local out=$1 hw mem
  hw=$(node_hw)
  mem=$(node_real_memory_mb)
  cat >"$out" <<EOF
# Written by scripts/slurm-testbed.sh; changes are overwritten.
ClusterName=$SLURM_CLUSTER
SlurmctldHost=$NODE
$(slurm_conf_daemons)
$(slurm_conf_paths "$SLURMCTLD_PIDFILE" "$SLURMD_PIDFILE" "$SLURM_STATE_DIR" "$SLURMD_SPOOL_DIR" \
    "$SLURMCTLD_LOG" "$SLURMD_LOG")
$(slurm_conf_policy)

NodeName=$NODE NodeAddr=127.0.0.1 $hw RealMemory=$mem State=UNKNOWN
PartitionName=$SLURM_PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# Who runs both clusters and how they authenticate.
slurm_conf_daemons() {
  cat <<EOF
SlurmUser=$SLURM_USER
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ReturnToService=2
EOF
}

# A cluster's own files: slurm_conf_paths SLURMCTLD_PIDFILE SLURMD_PIDFILE
# STATE_DIR SPOOL_DIR SLURMCTLD_LOG SLURMD_LOG.
slurm_conf_paths() {
  cat <<EOF
SlurmctldPidFile=$1
SlurmdPidFile=$2
StateSaveLocation=$3
SlurmdSpoolDir=$4
SlurmctldLogFile=$5
SlurmdLogFile=$6
EOF
}

# What both clusters' slurm.conf have in common after the paths.
slurm_conf_policy() {
  cat <<EOF
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true

# Processes tracked, and memory/cores enforced, through cgroups (cgroup.conf).
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU_MB
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill

# jobdock's epilog (removes a job's containers); see SLURM_EPILOG in the script.
$(epilog_line)
EOF
}

# The job_container/tmpfs cluster: the same node and policy as the main one,
# on its own ports, paths and node name (slurmd -N), with job ids of its own.
write_tmpfs_slurm_conf() {
  local out=$1 hw mem
  hw=$(node_hw)
  mem=$(node_real_memory_mb)
  cat >"$out" <<EOF
# Written by scripts/slurm-testbed.sh; changes are overwritten.
# The job_container/tmpfs test cluster; use it with SLURM_CONF=$TMPFS_CONF_PATH.
ClusterName=$TMPFS_CLUSTER
SlurmctldHost=$NODE
SlurmctldPort=$TMPFS_SLURMCTLD_PORT
SlurmdPort=$TMPFS_SLURMD_PORT
$(slurm_conf_daemons)
FirstJobId=$TMPFS_FIRST_JOB_ID
$(slurm_conf_paths "$TMPFS_SLURMCTLD_PIDFILE" "$TMPFS_SLURMD_PIDFILE" "$TMPFS_STATE_DIR" \
    "$TMPFS_SPOOL_DIR" "$TMPFS_SLURMCTLD_LOG" "$TMPFS_SLURMD_LOG")
$(slurm_conf_policy)

# Every job in a mount namespace of its own with a private /tmp and /dev/shm
# (job_container.conf); Contain puts the job's extern step, so everything of
# the job on the node, in it too.
JobContainerType=job_container/tmpfs
PrologFlags=Contain

NodeName=$TMPFS_NODE NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$TMPFS_SLURMD_PORT $hw RealMemory=$mem State=UNKNOWN
PartitionName=$TMPFS_PARTITION Nodes=$TMPFS_NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# The enforce cluster: the same node and policy as the main one, on its own ports, paths, node
# name and job ids, with a plugin stack of its own.
write_enforce_slurm_conf() {
  local out=$1 hw mem
  hw=$(node_hw)
  mem=$(node_real_memory_mb)
  cat >"$out" <<EOF
# Written by scripts/slurm-testbed.sh; changes are overwritten.
# The test cluster whose every step runs in a container (jobdock's plugin with enforce=1); use it
# with SLURM_CONF=$ENFORCE_CONF_PATH.
ClusterName=$ENFORCE_CLUSTER
SlurmctldHost=$NODE
SlurmctldPort=$ENFORCE_SLURMCTLD_PORT
SlurmdPort=$ENFORCE_SLURMD_PORT
$(slurm_conf_daemons)
FirstJobId=$ENFORCE_FIRST_JOB_ID
$(slurm_conf_paths "$ENFORCE_SLURMCTLD_PIDFILE" "$ENFORCE_SLURMD_PIDFILE" "$ENFORCE_STATE_DIR" \
    "$ENFORCE_SPOOL_DIR" "$ENFORCE_SLURMCTLD_LOG" "$ENFORCE_SLURMD_LOG")
$(slurm_conf_policy)

# jobdock's plugin, and nothing else (srun, sbatch and slurmstepd read it).
PlugStackConfig=$ENFORCE_PLUGSTACK
# An extern step in every job (the plugin leaves it bare).
PrologFlags=Contain

NodeName=$ENFORCE_NODE NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$ENFORCE_SLURMD_PORT $hw RealMemory=$mem State=UNKNOWN
PartitionName=$ENFORCE_PARTITION Nodes=$ENFORCE_NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# The MPI cluster: two nodes on this host, each with the host's CPUs and half of its memory.
write_mpi_slurm_conf() {
  local out=$1 hw mem i=0 node
  hw=$(node_hw)
  mem=$(( $(node_real_memory_mb) / 2 ))
  {
    cat <<EOF
# Written by scripts/slurm-testbed.sh; changes are overwritten.
# The two-node MPI test cluster; use it with SLURM_CONF=$MPI_CONF_PATH.
ClusterName=$MPI_CLUSTER
SlurmctldHost=$NODE
SlurmctldPort=$MPI_SLURMCTLD_PORT
SlurmUser=$SLURM_USER
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=pmix_v4
ReturnToService=2
FirstJobId=$MPI_FIRST_JOB_ID
SlurmctldPidFile=$MPI_SLURMCTLD_PIDFILE
SlurmdPidFile=$(mpi_slurmd_pidfile %n)
StateSaveLocation=$MPI_STATE_DIR
SlurmdSpoolDir=$MPI_SPOOL_BASE/%n
TmpFS=$MPI_TMPFS_BASE/%n
SlurmctldLogFile=$MPI_SLURMCTLD_LOG
SlurmdLogFile=$(mpi_slurmd_log %n)
$(slurm_conf_policy)

EOF
    for node in "${MPI_NODES[@]}"; do
      echo "NodeName=$node NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$((MPI_SLURMD_PORT_BASE + i)) $hw RealMemory=$mem State=UNKNOWN"
      i=$((i + 1))
    done
    echo "PartitionName=$MPI_PARTITION Nodes=$(IFS=,; echo "${MPI_NODES[*]}") Default=YES MaxTime=INFINITE State=UP"
  } >"$out"
}

# Slurm 22.05 knows BasePath, AutoBasePath and InitScript (no Dirs=: always
# /tmp and /dev/shm). Each job's /tmp is BasePath/<node>/<job>/.<job>, owned
# by the job's user, removed when the job ends.
write_job_container_conf() {
  cat >"$1" <<EOF
# Written by scripts/slurm-testbed.sh; changes are overwritten.
AutoBasePath=true
BasePath=$TMPFS_BASEPATH
EOF
}

write_cgroup_conf() {
  local out=$1
  {
    echo '# Written by scripts/slurm-testbed.sh; changes are overwritten.'
    if slurm_knows_cgroup_plugin; then
      echo 'CgroupPlugin=cgroup/v1'
    else
      echo '# (this Slurm has no CgroupPlugin key; it uses cgroup v1 anyway)'
    fi
    echo 'CgroupMountpoint=/sys/fs/cgroup'
    echo 'ConstrainRAMSpace=yes'
    echo 'AllowedRAMSpace=100'
    echo 'ConstrainSwapSpace=no'
    echo 'ConstrainCores=yes'
    echo 'ConstrainDevices=yes'
  } >"$out"
}

CONFIG_CHANGED=0
# install_if_changed NEW DEST: 0 = DEST replaced.
install_if_changed() {
  if cmp -s "$1" "$2"; then return 1; fi
  install -m 0644 "$1" "$2"
  return 0
}

ensure_config() {
  local changed=()
  make_work_dir
  install -d -m 0755 "$SLURM_CONF_DIR"
  write_slurm_conf "$WORK_DIR/slurm.conf"
  write_cgroup_conf "$WORK_DIR/cgroup.conf"
  if install_if_changed "$WORK_DIR/slurm.conf" "$SLURM_CONF_PATH"; then changed+=("$SLURM_CONF_PATH"); fi
  if install_if_changed "$WORK_DIR/cgroup.conf" "$CGROUP_CONF"; then changed+=("$CGROUP_CONF"); fi

  install -d -m 0755 -o "$SLURM_USER" -g "$SLURM_USER" /var/lib/slurm "$SLURM_STATE_DIR"
  install -d -m 0755 -o root -g root "$SLURMD_SPOOL_DIR"
  install -d -m 0755 -o "$SLURM_USER" -g "$SLURM_USER" "$SLURM_LOG_DIR"
  touch "$SLURMCTLD_LOG" "$SLURMD_LOG"
  chown "$SLURM_USER:$SLURM_USER" "$SLURMCTLD_LOG"
  chmod 0640 "$SLURMCTLD_LOG" "$SLURMD_LOG"

  local epi="no epilog"
  grep -q '^Epilog=' "$SLURM_CONF_PATH" && epi="Epilog=$SLURM_EPILOG"
  local summary
  summary="node $NODE $(grep -o 'CPUs=[0-9]*' "$SLURM_CONF_PATH") $(grep -o 'RealMemory=[0-9]*' "$SLURM_CONF_PATH")MB, $epi"
  if ((${#changed[@]})); then
    CONFIG_CHANGED=1
    say "config written: ${changed[*]} ($summary)"
  else
    say "config unchanged: $SLURM_CONF_PATH $CGROUP_CONF ($summary)"
  fi
}

# package_plugin_line: the plugstack line the installed package ships (`required SO ARGS...`),
# naming its plugin.
package_plugin_line() {
  local line
  [[ -f $SPANK_SO && -f $SPANK_PLUGSTACK_LINE ]] \
    || die "$SPANK_SO or $SPANK_PLUGSTACK_LINE missing: install the jobdock package first (scripts/build-deb.sh, dpkg -i; scripts/test.sh does)"
  line=$(grep '^required ' "$SPANK_PLUGSTACK_LINE") \
    || die "$SPANK_PLUGSTACK_LINE has no 'required' line"
  [[ $line == "required $SPANK_SO "* ]] || die "$SPANK_PLUGSTACK_LINE does not name $SPANK_SO: $line"
  printf '%s\n' "$line"
}

# ensure_spank: the plugins and the plugstack line of the main cluster; a change restarts its
# daemons (slurmd reads its plugin stack when it starts).
ensure_spank() {
  local changed=() line
  make_work_dir
  line=$(package_plugin_line) || exit 1
  if [[ ! -f $SPANK_TEST_BUILD ]]; then
    say "building the SPANK plugin's test build (log: $SPANK_LOG)"
    run_logged "$SPANK_LOG" cargo build --release --quiet -p jobdock-spank --features test-hooks \
      --target-dir "$SPANK_TEST_TARGET" --manifest-path "$REPO_ROOT/Cargo.toml" 8>&-
  fi
  install -d -m 0755 "${SPANK_TEST_SO%/*}" "${SPANK_PLUGSTACK%/*}" "${SPANK_SUM%/*}"
  # dpkg replaced the package's plugin: slurmd must start again to load the new one.
  sha256sum "$SPANK_SO" >"$WORK_DIR/jobdock_spank.so.sha256"
  if install_if_changed "$WORK_DIR/jobdock_spank.so.sha256" "$SPANK_SUM"; then changed+=("$SPANK_SO"); fi
  if install_if_changed "$SPANK_TEST_BUILD" "$SPANK_TEST_SO"; then changed+=("$SPANK_TEST_SO"); fi
  {
    echo '# Written by scripts/slurm-testbed.sh; changes are overwritten.'
    echo "$line"
    echo "required $SPANK_TEST_SO"
  } >"$WORK_DIR/jobdock-plugstack.conf"
  if install_if_changed "$WORK_DIR/jobdock-plugstack.conf" "$SPANK_PLUGSTACK"; then changed+=("$SPANK_PLUGSTACK"); fi
  if ((${#changed[@]})); then
    CONFIG_CHANGED=1
    say "SPANK plugin installed: ${changed[*]}"
  else
    say "SPANK plugin unchanged: $SPANK_SO $SPANK_TEST_SO $SPANK_PLUGSTACK"
  fi
}

TMPFS_CONFIG_CHANGED=0
ensure_tmpfs_config() {
  local changed=()
  make_work_dir
  install -d -m 0755 "$TMPFS_CONF_DIR"
  write_tmpfs_slurm_conf "$WORK_DIR/tmpfs-slurm.conf"
  write_cgroup_conf "$WORK_DIR/tmpfs-cgroup.conf"
  write_job_container_conf "$WORK_DIR/job_container.conf"
  if install_if_changed "$WORK_DIR/tmpfs-slurm.conf" "$TMPFS_CONF_PATH"; then changed+=("$TMPFS_CONF_PATH"); fi
  if install_if_changed "$WORK_DIR/tmpfs-cgroup.conf" "$TMPFS_CGROUP_CONF"; then changed+=("$TMPFS_CGROUP_CONF"); fi
  if install_if_changed "$WORK_DIR/job_container.conf" "$TMPFS_JC_CONF"; then changed+=("$TMPFS_JC_CONF"); fi

  install -d -m 0755 "$TMPFS_STATE_BASE"
  install -d -m 0755 -o "$SLURM_USER" -g "$SLURM_USER" "$TMPFS_STATE_DIR"
  install -d -m 0755 -o root -g root "$TMPFS_SPOOL_DIR" "$TMPFS_BASEPATH"
  install -d -m 0755 -o "$SLURM_USER" -g "$SLURM_USER" "$TMPFS_LOG_DIR"
  touch "$TMPFS_SLURMCTLD_LOG" "$TMPFS_SLURMD_LOG"
  chown "$SLURM_USER:$SLURM_USER" "$TMPFS_SLURMCTLD_LOG"
  chmod 0640 "$TMPFS_SLURMCTLD_LOG" "$TMPFS_SLURMD_LOG"

  local summary="node $TMPFS_NODE, ports $TMPFS_SLURMCTLD_PORT/$TMPFS_SLURMD_PORT, job_container/tmpfs BasePath=$TMPFS_BASEPATH/$TMPFS_NODE"
  if ((${#changed[@]})); then
    TMPFS_CONFIG_CHANGED=1
    say "tmpfs cluster config written: ${changed[*]} ($summary)"
  else
    say "tmpfs cluster config unchanged: $TMPFS_CONF_DIR/{slurm,cgroup,job_container}.conf ($summary)"
  fi
}

MPI_CONFIG_CHANGED=0
ensure_mpi_config() {
  local changed=() node
  make_work_dir
  install -d -m 0755 "$MPI_CONF_DIR"
  write_mpi_slurm_conf "$WORK_DIR/mpi-slurm.conf"
  write_cgroup_conf "$WORK_DIR/mpi-cgroup.conf"
  if install_if_changed "$WORK_DIR/mpi-slurm.conf" "$MPI_CONF_PATH"; then changed+=("$MPI_CONF_PATH"); fi
  if install_if_changed "$WORK_DIR/mpi-cgroup.conf" "$MPI_CGROUP_CONF"; then changed+=("$MPI_CGROUP_CONF"); fi
  install -d -m 0755 "$MPI_STATE_BASE" "$MPI_SPOOL_BASE" "$MPI_TMPFS_BASE"
  install -d -m 0755 -o "$SLURM_USER" -g "$SLURM_USER" "$MPI_STATE_DIR" "$MPI_LOG_DIR"
  touch "$MPI_SLURMCTLD_LOG"
  chown "$SLURM_USER:$SLURM_USER" "$MPI_SLURMCTLD_LOG"
  for node in "${MPI_NODES[@]}"; do
    install -d -m 0755 -o root -g root "$MPI_SPOOL_BASE/$node"
    # A job's TmpFS is where PMIx puts its server's files: every user's, as /tmp is.
    install -d -m 1777 -o root -g root "$MPI_TMPFS_BASE/$node"
    touch "$(mpi_slurmd_log "$node")"
    chmod 0640 "$(mpi_slurmd_log "$node")"
  done
  ensure_mpi_hosts
  local summary="nodes ${MPI_NODES[*]}, ports $MPI_SLURMCTLD_PORT/$MPI_SLURMD_PORT_BASE+, MpiDefault=pmix_v4, TmpFS=$MPI_TMPFS_BASE/%n"
  if ((${#changed[@]})); then
    MPI_CONFIG_CHANGED=1
    say "mpi cluster config written: ${changed[*]} ($summary)"
  else
    say "mpi cluster config unchanged: $MPI_CONF_DIR/{slurm,cgroup}.conf ($summary)"
  fi
}

# The virtual cluster (issue 14.4) reaches each node's sshd by the node's name, as a real
# cluster's nodes resolve. Here the nodes are one host: each name gets a loopback address of its
# own (127.0.0.2, .3, ...), not 127.0.0.1, which OpenMPI takes for the node mpirun runs on (for
# both nodes, then). /etc/hosts is rewritten in place (containers of the host network copy it).
MPI_HOSTS_MARK='# jobdock-testbed mpi node'
ensure_mpi_hosts() {
  local i want=()
  for i in "${!MPI_NODES[@]}"; do want+=("127.0.0.$((i + 2)) ${MPI_NODES[i]} $MPI_HOSTS_MARK"); done
  if [[ $(grep -F -- "$MPI_HOSTS_MARK" /etc/hosts || true) == "$(printf '%s\n' "${want[@]}")" ]]; then
    return 0
  fi
  local kept
  kept=$(grep -v -F -- "$MPI_HOSTS_MARK" /etc/hosts || true)
  printf '%s\n' "$kept" "${want[@]}" >/etc/hosts
  say "/etc/hosts: ${MPI_NODES[*]} at 127.0.0.2+"
}

ENFORCE_CONFIG_CHANGED=0
# ensure_enforce_config: its slurm.conf, cgroup.conf and plugstack, whose one line is the
# package's (its plugin and jobdock paths) with this cluster's settings in place of the shipped
# ones. A change, or a new plugin from dpkg, restarts its daemons alone.
ensure_enforce_config() {
  local changed=() line all word words=()
  make_work_dir
  line=$(package_plugin_line) || exit 1
  read -r -a all <<<"$line"
  for word in "${all[@]}"; do
    case $word in enforce=* | sbatch=* | default_image=*) ;; *) words+=("$word") ;; esac
  done
  install -d -m 0755 "$ENFORCE_CONF_DIR"
  write_enforce_slurm_conf "$WORK_DIR/enforce-slurm.conf"
  write_cgroup_conf "$WORK_DIR/enforce-cgroup.conf"
  {
    echo '# Written by scripts/slurm-testbed.sh; changes are overwritten.'
    echo "${words[*]} $ENFORCE_SETTINGS"
  } >"$WORK_DIR/enforce-plugstack.conf"
  if install_if_changed "$WORK_DIR/enforce-slurm.conf" "$ENFORCE_CONF_PATH"; then changed+=("$ENFORCE_CONF_PATH"); fi
  if install_if_changed "$WORK_DIR/enforce-cgroup.conf" "$ENFORCE_CGROUP_CONF"; then changed+=("$ENFORCE_CGROUP_CONF"); fi
  if install_if_changed "$WORK_DIR/enforce-plugstack.conf" "$ENFORCE_PLUGSTACK"; then changed+=("$ENFORCE_PLUGSTACK"); fi

  install -d -m 0755 "$ENFORCE_STATE_BASE"
  install -d -m 0755 -o "$SLURM_USER" -g "$SLURM_USER" "$ENFORCE_STATE_DIR" "$ENFORCE_LOG_DIR"
  install -d -m 0755 -o root -g root "$ENFORCE_SPOOL_DIR"
  touch "$ENFORCE_SLURMCTLD_LOG" "$ENFORCE_SLURMD_LOG"
  chown "$SLURM_USER:$SLURM_USER" "$ENFORCE_SLURMCTLD_LOG"
  chmod 0640 "$ENFORCE_SLURMCTLD_LOG" "$ENFORCE_SLURMD_LOG"
  sha256sum "$SPANK_SO" >"$WORK_DIR/enforce-spank.sha256"
  if install_if_changed "$WORK_DIR/enforce-spank.sha256" "$ENFORCE_SPANK_SUM"; then changed+=("$SPANK_SO"); fi

  local summary="node $ENFORCE_NODE, ports $ENFORCE_SLURMCTLD_PORT/$ENFORCE_SLURMD_PORT, plugstack $ENFORCE_SETTINGS"
  if ((${#changed[@]})); then
    ENFORCE_CONFIG_CHANGED=1
    say "enforce cluster config written: ${changed[*]} ($summary)"
  else
    say "enforce cluster config unchanged: $ENFORCE_CONF_DIR/{slurm,cgroup,plugstack}.conf ($summary)"
  fi
}

# ------------------------------------------------------------------- slurm --
# use_cluster main|tmpfs|mpi|mpi:NODE|enforce: what the functions below (and the Slurm commands
# they run) work on. The main cluster is Slurm's default config, as users'
# commands see it; the tmpfs one is SLURM_CONF=$TMPFS_CONF_PATH, passed to
# every command and daemon, which also get "-f" (see runs_tmpfs_conf); the
# others likewise, and their daemons run as CL_*_BIN under names of their own.
use_cluster() {
  CL=$1
  CL_SLURMCTLD_BIN=$SLURMCTLD_BIN
  CL_SLURMD_BIN=$SLURMD_BIN
  if [[ $CL == enforce ]]; then
    export SLURM_CONF=$ENFORCE_CONF_PATH
    CL_NAME="$ENFORCE_CLUSTER "
    CL_NODE=$ENFORCE_NODE
    CL_SLURMCTLD_PIDFILE=$ENFORCE_SLURMCTLD_PIDFILE
    CL_SLURMD_PIDFILE=$ENFORCE_SLURMD_PIDFILE
    CL_SLURMCTLD_LOG=$ENFORCE_SLURMCTLD_LOG
    CL_SLURMD_LOG=$ENFORCE_SLURMD_LOG
    CL_SLURMCTLD_ARGS=(-f "$ENFORCE_CONF_PATH")
    CL_SLURMD_ARGS=(-f "$ENFORCE_CONF_PATH" -N "$ENFORCE_NODE")
    CL_CHANGED=$ENFORCE_CONFIG_CHANGED
    CL_SLURMCTLD_COMM=$ENFORCE_SLURMCTLD_COMM
    CL_SLURMD_COMM=$ENFORCE_SLURMD_COMM
    CL_SLURMCTLD_BIN=$MPI_BIN_DIR/$ENFORCE_SLURMCTLD_COMM
    CL_SLURMD_BIN=$MPI_BIN_DIR/$ENFORCE_SLURMD_COMM
  elif [[ $CL == mpi || $CL == mpi:* ]]; then
    local node=${CL#mpi:}
    [[ $node == mpi ]] && node=${MPI_NODES[0]}
    export SLURM_CONF=$MPI_CONF_PATH
    CL_NAME="$MPI_CLUSTER "
    CL_NODE=$node
    CL_SLURMCTLD_PIDFILE=$MPI_SLURMCTLD_PIDFILE
    CL_SLURMD_PIDFILE=$(mpi_slurmd_pidfile "$node")
    CL_SLURMCTLD_LOG=$MPI_SLURMCTLD_LOG
    CL_SLURMD_LOG=$(mpi_slurmd_log "$node")
    CL_SLURMCTLD_ARGS=(-f "$MPI_CONF_PATH")
    CL_SLURMD_ARGS=(-f "$MPI_CONF_PATH" -N "$node")
    CL_CHANGED=$MPI_CONFIG_CHANGED
    CL_SLURMCTLD_COMM=$MPI_SLURMCTLD_COMM
    CL_SLURMD_COMM=$MPI_SLURMD_COMM
    CL_SLURMCTLD_BIN=$MPI_BIN_DIR/$MPI_SLURMCTLD_COMM
    CL_SLURMD_BIN=$MPI_BIN_DIR/$MPI_SLURMD_COMM
  elif [[ $CL == tmpfs ]]; then
    export SLURM_CONF=$TMPFS_CONF_PATH
    CL_NAME="$TMPFS_CLUSTER "
    CL_NODE=$TMPFS_NODE
    CL_SLURMCTLD_PIDFILE=$TMPFS_SLURMCTLD_PIDFILE
    CL_SLURMD_PIDFILE=$TMPFS_SLURMD_PIDFILE
    CL_SLURMCTLD_LOG=$TMPFS_SLURMCTLD_LOG
    CL_SLURMD_LOG=$TMPFS_SLURMD_LOG
    CL_SLURMCTLD_ARGS=(-f "$TMPFS_CONF_PATH")
    CL_SLURMD_ARGS=(-f "$TMPFS_CONF_PATH" -N "$TMPFS_NODE")
    CL_CHANGED=$TMPFS_CONFIG_CHANGED
    CL_SLURMCTLD_COMM=slurmctld
    CL_SLURMD_COMM=slurmd
  else
    unset SLURM_CONF
    CL_NAME=""
    CL_NODE=$NODE
    CL_SLURMCTLD_PIDFILE=$SLURMCTLD_PIDFILE
    CL_SLURMD_PIDFILE=$SLURMD_PIDFILE
    CL_SLURMCTLD_LOG=$SLURMCTLD_LOG
    CL_SLURMD_LOG=$SLURMD_LOG
    CL_SLURMCTLD_ARGS=()
    CL_SLURMD_ARGS=()
    CL_CHANGED=$CONFIG_CHANGED
    CL_SLURMCTLD_COMM=slurmctld
    CL_SLURMD_COMM=slurmd
  fi
}
use_cluster main

slurmctld_answers() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

# node_state: sinfo's long state of $CL_NODE ("idle", "down*", "drained", ...).
node_state() { sinfo -h -N -n "$CL_NODE" -o '%T' 2>/dev/null | head -n 1; }

node_reason() { sinfo -h -N -n "$CL_NODE" -o '%E' 2>/dev/null | head -n 1; }

node_usable() {
  case $(node_state) in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}

# start_slurm_daemon BIN COMM PIDFILE LOG [ARG...]: the daemon forks itself
# into the background (no -D) and writes PIDFILE; wait until it is alive.
start_slurm_daemon() {
  local bin=$1 comm=$2 pidfile=$3 log=$4 offset pid deadline
  shift 4
  offset=$(file_size "$log")
  printf '=== %s slurm-testbed: starting %s\n' "$(date -u +%FT%TZ)" "$bin${*:+ $*}" >>"$log"
  "$bin" "$@" </dev/null >>"$log" 2>&1 8>&- || { tail_log "$log" "$offset"; die "$bin failed to start (log: $log)"; }
  deadline=$((SECONDS + 15))
  while ((SECONDS < deadline)); do
    pid=$(pidfile_pid "$pidfile")
    if cluster_pid_is "$pid" "$comm" "$CL"; then return 0; fi
    sleep 0.2
  done
  tail_log "$log" "$offset"
  die "${CL_NAME}$comm did not stay up (no live pid in $pidfile; log: $log)"
}

# ensure_slurm_daemon COMM PIDFILE BIN LOG RESTART [ARG...]: of cluster $CL.
ensure_slurm_daemon() {
  local comm=$1 pidfile=$2 bin=$3 log=$4 restart=$5 pid
  shift 5
  pid=$(daemon_pid "$pidfile" "$comm" "$CL")
  if [[ -n $pid ]] && ((restart == 0)); then
    say "${CL_NAME}$comm running (pid $pid)"
    return 0
  fi
  if [[ -n $pid ]]; then
    say "${CL_NAME}$comm (pid $pid): config changed, restarting"
    stop_pid "$pid" "$comm" "$comm" 30
    rm -f "$pidfile"
  fi
  # A pid file left by a SIGKILLed daemon: the daemons check it themselves
  # (fcntl lock), but a stale one is removed here to keep status honest.
  if [[ -e $pidfile ]] && ! cluster_pid_is "$(pidfile_pid "$pidfile")" "$comm" "$CL"; then
    rm -f "$pidfile"
    say "removed stale $pidfile"
  fi
  start_slurm_daemon "$bin" "$comm" "$pidfile" "$log" "$@"
  say "${CL_NAME}$comm started (pid $(pidfile_pid "$pidfile"), log $log)"
}

wait_slurmctld() {
  local deadline=$((SECONDS + SLURM_WAIT))
  until slurmctld_answers; do
    if ((SECONDS >= deadline)); then
      tail_log "$CL_SLURMCTLD_LOG"
      die "${CL_NAME}slurmctld does not answer 'scontrol ping' within ${SLURM_WAIT}s (log: $CL_SLURMCTLD_LOG)"
    fi
    cluster_pid_is "$(pidfile_pid "$CL_SLURMCTLD_PIDFILE")" "$CL_SLURMCTLD_COMM" "$CL" \
      || { tail_log "$CL_SLURMCTLD_LOG"; die "${CL_NAME}slurmctld exited (log: $CL_SLURMCTLD_LOG)"; }
    sleep 0.3
  done
}

wait_node() {
  local deadline=$((SECONDS + SLURM_WAIT)) state resumed=0
  while :; do
    state=$(node_state)
    case $state in
      idle | mixed | allocated | completing)
        if ((resumed)); then
          say "node $CL_NODE $state (resumed)"
        else
          say "node $CL_NODE $state"
        fi
        return 0 ;;
      down | drained | draining | drain | fail | failing)
        # Responding but marked down/drained (e.g. after an unclean stop).
        if ((resumed == 0)); then
          say "node $CL_NODE is $state ($(node_reason)); scontrol update state=resume"
          scontrol update nodename="$CL_NODE" state=resume >>"$CL_SLURMCTLD_LOG" 2>&1 || true
          resumed=1
        fi ;;
    esac
    if ((SECONDS >= deadline)); then
      tail_log "$CL_SLURMD_LOG"
      die "node $CL_NODE is '${state:-?}' ($(node_reason)) after ${SLURM_WAIT}s (logs: $CL_SLURMD_LOG $CL_SLURMCTLD_LOG)"
    fi
    cluster_pid_is "$(pidfile_pid "$CL_SLURMD_PIDFILE")" "$CL_SLURMD_COMM" "$CL" \
      || { tail_log "$CL_SLURMD_LOG"; die "${CL_NAME}slurmd exited (log: $CL_SLURMD_LOG)"; }
    sleep 0.5
  done
}

# ensure_slurm: slurmctld and slurmd of cluster $CL (use_cluster).
ensure_slurm() {
  ensure_slurm_daemon "$CL_SLURMCTLD_COMM" "$CL_SLURMCTLD_PIDFILE" "$CL_SLURMCTLD_BIN" "$CL_SLURMCTLD_LOG" "$CL_CHANGED" \
    "${CL_SLURMCTLD_ARGS[@]}"
  wait_slurmctld
  ensure_slurm_daemon "$CL_SLURMD_COMM" "$CL_SLURMD_PIDFILE" "$CL_SLURMD_BIN" "$CL_SLURMD_LOG" "$CL_CHANGED" \
    "${CL_SLURMD_ARGS[@]}"
  wait_node
}

# ensure_enforce_slurm: the enforce cluster's slurmctld and slurmd, under their own names.
ensure_enforce_slurm() {
  install -d -m 0755 "$MPI_BIN_DIR"
  ln -sfn "$SLURMCTLD_BIN" "$MPI_BIN_DIR/$ENFORCE_SLURMCTLD_COMM"
  ln -sfn "$SLURMD_BIN" "$MPI_BIN_DIR/$ENFORCE_SLURMD_COMM"
  use_cluster enforce
  ensure_slurm
  use_cluster main
}

# ensure_mpi_slurm: the MPI cluster's slurmctld, then one slurmd per node.
ensure_mpi_slurm() {
  local node
  install -d -m 0755 "$MPI_BIN_DIR"
  ln -sfn "$SLURMCTLD_BIN" "$MPI_BIN_DIR/$MPI_SLURMCTLD_COMM"
  ln -sfn "$SLURMD_BIN" "$MPI_BIN_DIR/$MPI_SLURMD_COMM"
  use_cluster mpi
  ensure_slurm_daemon "$CL_SLURMCTLD_COMM" "$CL_SLURMCTLD_PIDFILE" "$MPI_BIN_DIR/$MPI_SLURMCTLD_COMM" "$CL_SLURMCTLD_LOG" "$CL_CHANGED" \
    "${CL_SLURMCTLD_ARGS[@]}"
  wait_slurmctld
  for node in "${MPI_NODES[@]}"; do
    use_cluster "mpi:$node"
    ensure_slurm_daemon "$CL_SLURMD_COMM" "$CL_SLURMD_PIDFILE" "$MPI_BIN_DIR/$MPI_SLURMD_COMM" "$CL_SLURMD_LOG" "$CL_CHANGED" \
      "${CL_SLURMD_ARGS[@]}"
    wait_node
  done
  use_cluster main
}

# ------------------------------------------------------------- MPI image --
mpi_image_digest() {
  {
    declare -f build_mpi_image
    cat "$MPI_SRC_DIR"/*.c
    dpkg-query -W -f='${Package} ${Version}\n' openmpi-bin libopenmpi3 libpmix2 libc6 openssh-server openssh-client 2>/dev/null
  } | sha256sum | cut -c1-16
}

# build_mpi_image ROOT: busybox's files, the programs, and the shared-library closure of them,
# of mpirun and of every OpenMPI and PMIx plugin (dlopened, so ldd cannot see them).
build_mpi_image() {
  local root=$1 f lib
  umask 022
  dk create --name "jobdock-testbed-mpi-base.$$" "$VERIFY_IMAGE" /bin/true >/dev/null
  dk export "jobdock-testbed-mpi-base.$$" | tar -x -C "$root"
  dk rm -f "jobdock-testbed-mpi-base.$$" >/dev/null
  # Debian's merged /usr: /lib is usr/lib, where the loader that /lib64 names lives.
  install -d -m 0755 "$root/usr/lib" "$root/usr/bin"
  [[ -e $root/lib || -L $root/lib ]] || ln -s usr/lib "$root/lib"
  mpicc -O2 -o "$root/hello" "$MPI_SRC_DIR/hello.c"
  mpicc -O2 -o "$root/pingpong" "$MPI_SRC_DIR/pingpong.c"
  local dirs=(/usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/pmix2 /usr/share/openmpi
    /usr/share/pmix /etc/openmpi)
  for f in "${dirs[@]}"; do [[ -e $f ]] && cp -a --parents "$f" "$root/"; done
  cp -a --parents /usr/bin/orterun /usr/bin/mpirun "$root/" 2>/dev/null || true
  # The daemon mpirun starts on each node over ssh (the virtual cluster).
  cp -a --parents /usr/bin/orted "$root/"
  # The virtual cluster's sshd and ssh (mpirun over ssh between the nodes' containers).
  cp -a --parents /usr/sbin/sshd /usr/bin/ssh "$root/"
  # (mpirun is a symlink to orterun; /usr/bin/mpirun -> /etc/alternatives/... -> orterun)
  [[ -L $root/usr/bin/mpirun ]] && ln -sf orterun "$root/usr/bin/mpirun"
  while read -r lib; do
    [[ -e $root$lib ]] || cp -a --parents "$lib" "$root/"
    # the file a symlinked soname names, too
    f=$(readlink -f "$lib"); [[ -e $root$f ]] || cp -a --parents "$f" "$root/"
  done < <(
    { echo "$root/hello"; echo "$root/pingpong"; echo /usr/bin/orterun; echo /usr/bin/orted; echo /usr/sbin/sshd; echo /usr/bin/ssh
      find "${dirs[@]}" -name '*.so*' -type f 2>/dev/null; } \
      | xargs -r ldd 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u
  )
  # cp --parents gives the directories it makes the modes of the host's; everything is
  # world-readable in an image.
  chmod -R u+rwX,go+rX-w "$root"
  mkdir -p "$root/tmp" && chmod 1777 "$root/tmp"
}

ensure_mpi_image() {
  local digest root
  digest=$(mpi_image_digest)
  if [[ $(dk image inspect -f "{{index .Config.Labels \"$MPI_RECIPE_LABEL\"}}" "$MPI_IMAGE" 2>/dev/null) == "$digest" ]]; then
    say "image $MPI_IMAGE present (recipe $digest)"
    return 0
  fi
  make_work_dir
  root=$WORK_DIR/mpi-root
  install -d -m 0755 "$root"
  build_mpi_image "$root" >>"$LOG_DIR/mpi-image.log" 2>&1 \
    || { tail_log "$LOG_DIR/mpi-image.log"; die "building the MPI image's files failed (log: $LOG_DIR/mpi-image.log)"; }
  tar -C "$root" -c . | dk import --change "LABEL $MPI_RECIPE_LABEL=$digest" --change 'CMD ["/hello"]' - "$MPI_IMAGE" >/dev/null \
    || die "docker import of $MPI_IMAGE failed"
  say "image $MPI_IMAGE built ($(du -sh "$root" | cut -f1), recipe $digest)"
}

# ------------------------------------------------------------------ verify --
# check WHAT CONDITION-DESCRIPTION: log and die on failure.
vlog() { printf '%s\n' "$*" >>"$VERIFY_LOG"; }

verify_cmd() {
  # verify_cmd VAR CMD...: run CMD (logged); its stdout into VAR; die on failure.
  local __var=$1; shift
  local __out __rc=0
  vlog "=== $(date -u +%FT%TZ) \$ $*"
  __out=$("$@" 2>>"$VERIFY_LOG") || __rc=$?
  vlog "$__out"
  if ((__rc != 0)); then
    tail_log "$VERIFY_LOG"
    die "verify: '$*' failed with exit $__rc (log: $VERIFY_LOG)"
  fi
  printf -v "$__var" '%s' "$__out"
}

verify() {
  local out job cg limit
  make_work_dir
  ensure_testbed

  # 1. srun as the test user, with a memory limit.
  verify_cmd out timeout 120 runuser -u "$VERIFY_USER" -- srun -N1 -n1 --mem="$VERIFY_MEM" --chdir=/tmp id -u
  [[ $out == "$VERIFY_UID" ]] || die "verify: srun id -u as $VERIFY_USER printed '$out', expected $VERIFY_UID"
  say "verify: srun -N1 -n1 --mem=$VERIFY_MEM id as $VERIFY_USER -> uid $out"

  # 2. sbatch --wait of a tiny script.
  cat >"$WORK_DIR/tiny.sbatch" <<'EOF'
#!/bin/sh
#SBATCH --job-name=jobdock-testbed
echo "batch ok uid=$(id -u) job=$SLURM_JOB_ID"
grep ':memory:' /proc/self/cgroup
EOF
  chmod 0644 "$WORK_DIR/tiny.sbatch"
  # A node that drains meanwhile (a failing epilog) would keep sbatch --wait waiting forever.
  verify_cmd out timeout 120 runuser -u "$VERIFY_USER" -- sbatch --wait --parsable --mem="$VERIFY_MEM" \
    --chdir=/tmp --output="/tmp/jobdock-testbed-%j.out" "$WORK_DIR/tiny.sbatch"
  job=${out%%;*}
  [[ $job =~ ^[0-9]+$ ]] || die "verify: sbatch printed '$out', not a job id"
  out=$(cat "/tmp/jobdock-testbed-$job.out" 2>/dev/null || true)
  vlog "$out"
  rm -f "/tmp/jobdock-testbed-$job.out"
  [[ $out == *"batch ok uid=$VERIFY_UID job=$job"* ]] \
    || die "verify: batch job $job wrote '$out' (log: $VERIFY_LOG)"
  say "verify: sbatch --wait job $job ran as uid $VERIFY_UID ($(grep -o '/slurm[^ ]*' <<<"$out" | head -n 1))"

  # 3. A step's memory cgroup and its limit. Debian builds Slurm with
  #    --enable-multiple-slurmd, so the v1 root is /slurm_<node>, not /slurm;
  #    task/cgroup puts each task in a task_N child of the step, and the
  #    limit is set on job_N and step_N, not on task_N (which says unlimited).
  # shellcheck disable=SC2016  # expanded by the step's shell
  verify_cmd out timeout 120 runuser -u "$VERIFY_USER" -- srun -N1 -n1 --mem="$VERIFY_MEM" --chdir=/tmp \
    sh -c 'p=$(sed -n "s/^[0-9]*:memory://p" /proc/self/cgroup); s=${p%/task_*}
      echo "$p"; cat "/sys/fs/cgroup/memory$s/memory.limit_in_bytes"
      sed -n "s/^hierarchical_memory_limit //p" "/sys/fs/cgroup/memory$p/memory.stat"'
  cg=$(sed -n 1p <<<"$out")
  limit=$(sed -n 2p <<<"$out")
  local hier
  hier=$(sed -n 3p <<<"$out")
  [[ $cg =~ ^/slurm(_$NODE)?/uid_${VERIFY_UID}/job_[0-9]+/step_0(/task_0)?$ ]] \
    || die "verify: step memory cgroup is '$cg', expected /slurm_$NODE/uid_$VERIFY_UID/job_N/step_0[/task_0]"
  [[ $limit == "$VERIFY_MEM_BYTES" ]] \
    || die "verify: ${cg%/task_*} memory.limit_in_bytes is '$limit', expected $VERIFY_MEM_BYTES"
  [[ $hier == "$VERIFY_MEM_BYTES" ]] \
    || die "verify: $cg hierarchical_memory_limit is '$hier', expected $VERIFY_MEM_BYTES"
  say "verify: step cgroup memory:$cg; ${cg%/task_*} limit $limit; hierarchical limit $hier"

  # 4. docker run from inside a root srun step, --cgroup-parent = the step's
  #    memory cgroup path from /proc/self/cgroup minus its /task_N, ABSOLUTE
  #    (leading "/"; runc takes a relative one relative to its own cgroup,
  #    i.e. dockerd's). The container's cgroup is then a child of the step's in
  #    every hierarchy: its own memory.limit_in_bytes reads "unlimited", but its
  #    hierarchical_memory_limit is the step's, and the kernel enforces it.
  cat >"$WORK_DIR/docker-step.sh" <<EOF
#!/bin/sh
set -e
p=\$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)
parent=\${p%/task_*}
echo "job=\$SLURM_JOB_ID"
echo "parent=\$parent"
DOCKER_HOST=unix://$DOCKER_SOCK docker run --rm --network none --cgroup-parent "\$parent" $VERIFY_IMAGE \\
  sh -c 'echo "ctr=\$(sed -n "s/^[0-9]*:memory://p" /proc/self/cgroup)"; echo "ctr_limit=\$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"; echo "ctr_hier=\$(sed -n "s/^hierarchical_memory_limit //p" /sys/fs/cgroup/memory/memory.stat)"'
rc=0
DOCKER_HOST=unix://$DOCKER_SOCK docker run --rm --network none --cgroup-parent "\$parent" $VERIFY_IMAGE \\
  sh -c 'x=\$(head -c 134217728 /dev/zero | tr "\\\\0" a); echo survived \${#x}' >/dev/null 2>&1 || rc=\$?
echo "oom_rc=\$rc"
EOF
  chmod 0755 "$WORK_DIR/docker-step.sh"
  verify_cmd out timeout 120 srun -N1 -n1 --mem="$VERIFY_MEM" --chdir=/tmp "$WORK_DIR/docker-step.sh"
  local vjob parent ctr ctr_limit ctr_hier oom_rc
  vjob=$(sed -n 's/^job=//p' <<<"$out")
  parent=$(sed -n 's/^parent=//p' <<<"$out")
  ctr=$(sed -n 's/^ctr=//p' <<<"$out")
  ctr_limit=$(sed -n 's/^ctr_limit=//p' <<<"$out")
  ctr_hier=$(sed -n 's/^ctr_hier=//p' <<<"$out")
  oom_rc=$(sed -n 's/^oom_rc=//p' <<<"$out")
  clean_job_cgroups "$vjob"
  [[ -n $parent && $ctr == "$parent"/* ]] \
    || die "verify: container memory cgroup '$ctr' is not below the step's '$parent' (log: $VERIFY_LOG)"
  [[ $ctr_hier == "$VERIFY_MEM_BYTES" ]] \
    || die "verify: container hierarchical_memory_limit is '$ctr_hier', expected $VERIFY_MEM_BYTES (log: $VERIFY_LOG)"
  [[ $oom_rc == 137 ]] \
    || die "verify: a container allocating 128 MiB in a $VERIFY_MEM step exited $oom_rc, expected 137 (OOM kill)"
  say "verify: docker --cgroup-parent $parent -> container memory:$ctr; own limit $ctr_limit, hierarchical $ctr_hier; 128 MiB allocation OOM-killed (exit $oom_rc)"
}

# clean_job_cgroups JOBID: runc creates the cgroup parent in every v1
# hierarchy (and in the cgroup2 one at /sys/fs/cgroup/unified), but Slurm only
# removes job_N from those it manages (memory, freezer, cpuset, devices):
# remove the empty directories left in the others (blkio, cpu, cpuacct, pids,
# name=systemd, unified). In production that is the epilog's job.
clean_job_cgroups() {
  local job=$1 d n=0
  [[ $job =~ ^[0-9]+$ ]] || return 0
  sleep 0.5   # let slurmstepd finish its own cleanup first
  while read -r d; do
    if rmdir "$d" 2>/dev/null; then n=$((n + 1)); fi
  done < <(find /sys/fs/cgroup/*/slurm*/uid_*/job_"$job" -depth -type d 2>/dev/null)
  vlog "removed $n empty cgroup directories of job $job"
}

# 5. The tmpfs cluster: a job as the test user on $TMPFS_NODE runs in a mount
#    namespace that is not the host's, with a /tmp of its own (owned by the
#    user; the host's files not in it, its files not on the host) and its own
#    /dev/shm, in the node's cgroups (/slurm_<node>).
verify_tmpfs() {
  local out host_ns host_tmp host_shm marker job ns tmp shm seen wrote cg
  make_work_dir
  use_cluster tmpfs
  host_ns=$(readlink /proc/self/ns/mnt)
  host_tmp=$(stat -c '%d:%i' /tmp)
  host_shm=$(stat -c '%d' /dev/shm)
  marker=$(mktemp /tmp/jobdock-testbed-tmpfs-marker.XXXXXX)
  CLEANUP_PATHS+=("$marker")
  # shellcheck disable=SC2016  # expanded by the step's shell
  verify_cmd out timeout 120 runuser -u "$VERIFY_USER" -- srun -N1 -n1 --mem="$VERIFY_MEM" --chdir=/ \
    sh -c 'echo "job=$SLURM_JOB_ID"; echo "ns=$(readlink /proc/self/ns/mnt)"
      echo "tmp=$(stat -c %d:%i:%u /tmp)"; echo "shm=$(stat -c %d /dev/shm)"
      if [ -e "$1" ]; then echo seen=yes; else echo seen=no; fi
      echo probe >"/tmp/jobdock-testbed-tmpfs-probe-$SLURM_JOB_ID" && echo wrote=yes
      echo "cg=$(sed -n "s/^[0-9]*:memory://p" /proc/self/cgroup)"' sh "$marker"
  use_cluster main
  job=$(sed -n 's/^job=//p' <<<"$out")
  ns=$(sed -n 's/^ns=//p' <<<"$out")
  tmp=$(sed -n 's/^tmp=//p' <<<"$out")
  shm=$(sed -n 's/^shm=//p' <<<"$out")
  seen=$(sed -n 's/^seen=//p' <<<"$out")
  wrote=$(sed -n 's/^wrote=//p' <<<"$out")
  cg=$(sed -n 's/^cg=//p' <<<"$out")
  [[ $job =~ ^[0-9]+$ ]] || die "verify: $TMPFS_CLUSTER job printed no job id (log: $VERIFY_LOG)"
  if [[ -e /tmp/jobdock-testbed-tmpfs-probe-$job ]]; then
    rm -f "/tmp/jobdock-testbed-tmpfs-probe-$job"
    die "verify: $TMPFS_CLUSTER job $job wrote to the host's /tmp: no private /tmp (log: $TMPFS_SLURMD_LOG)"
  fi
  [[ $ns == mnt:* && $ns != "$host_ns" ]] \
    || die "verify: $TMPFS_CLUSTER job $job mount namespace '$ns', the host's is $host_ns (log: $TMPFS_SLURMD_LOG)"
  [[ -n $tmp && ${tmp%:*} != "$host_tmp" && ${tmp##*:} == "$VERIFY_UID" && $seen == no && $wrote == yes ]] \
    || die "verify: $TMPFS_CLUSTER job $job /tmp (dev:ino:uid '$tmp', host's $host_tmp; host's file seen: '$seen'; written: '$wrote') is not a private /tmp of uid $VERIFY_UID"
  [[ -n $shm && $shm != "$host_shm" ]] \
    || die "verify: $TMPFS_CLUSTER job $job /dev/shm is device '$shm', like the host's ($host_shm)"
  [[ $cg =~ ^/slurm_${TMPFS_NODE}/uid_${VERIFY_UID}/job_${job}/step_0(/task_0)?$ ]] \
    || die "verify: $TMPFS_CLUSTER job $job memory cgroup is '$cg', expected /slurm_$TMPFS_NODE/uid_$VERIFY_UID/job_$job/step_0[/task_0]"
  say "verify: $TMPFS_CLUSTER srun as $VERIFY_USER, job $job on $TMPFS_NODE: mount ns $ns (host $host_ns); private /tmp (owner uid ${tmp##*:}, host's files unseen, its files not on the host); own /dev/shm; memory:$cg"
}

# 6. The MPI cluster: a 2-node, 4-task PMIx step as the test user runs 2 tasks on each node,
#    each in its node's cgroups (/slurm_<node>), with a PMIx server directory in its environment.
verify_mpi() {
  local out n1 n2 pmix
  use_cluster mpi
  # shellcheck disable=SC2016  # expanded by the step's shell
  verify_cmd out timeout 120 runuser -u "$VERIFY_USER" -- srun -N2 -n4 --mpi=pmix --mem-per-cpu=64M --chdir=/tmp \
    sh -c 'echo "task=$SLURM_PROCID node=$SLURMD_NODENAME pmix=${PMIX_SERVER_TMPDIR:+yes} cg=$(sed -n "s/^[0-9]*:memory://p" /proc/self/cgroup)"'
  use_cluster main
  n1=$(grep -c "node=${MPI_NODES[0]} pmix=yes cg=/slurm_${MPI_NODES[0]}/" <<<"$out" || true)
  n2=$(grep -c "node=${MPI_NODES[1]} pmix=yes cg=/slurm_${MPI_NODES[1]}/" <<<"$out" || true)
  pmix=$(grep -c 'pmix=yes' <<<"$out" || true)
  [[ $n1 == 2 && $n2 == 2 && $pmix == 4 ]] \
    || die "verify: $MPI_CLUSTER srun -N2 -n4 --mpi=pmix gave '$out', expected 2 PMIx tasks on each of ${MPI_NODES[*]} (log: $VERIFY_LOG)"
  say "verify: $MPI_CLUSTER srun -N2 -n4 --mpi=pmix as $VERIFY_USER: 2 tasks on each of ${MPI_NODES[*]}, PMIx server dir set, node cgroups /slurm_<node>"
}

# 7. The enforce cluster: a bare step as the test user runs in a container (a PID namespace that
#    is not the host's, docker's init as its PID 1, a cgroup of its own below the step's) through
#    the package's plugin and setuid jobdock. (Not /.dockerenv: a host made from an image has one.)
verify_enforce() {
  local out job uid cg pidns init host_pidns
  host_pidns=$(readlink /proc/self/ns/pid)
  use_cluster enforce
  # shellcheck disable=SC2016  # expanded by the step's shell
  verify_cmd out timeout 120 runuser -u "$VERIFY_USER" -- srun -N1 -n1 --mem="$VERIFY_MEM" --chdir=/tmp \
    sh -c 'echo "job=$SLURM_JOB_ID"; echo "uid=$(id -u)"; echo "cg=$(sed -n "s/^[0-9]*:memory://p" /proc/self/cgroup)"
      echo "pidns=$(readlink /proc/self/ns/pid)"; echo "init=$(tr "\0" "\n" </proc/1/cmdline | head -n 1)"'
  use_cluster main
  job=$(sed -n 's/^job=//p' <<<"$out")
  uid=$(sed -n 's/^uid=//p' <<<"$out")
  cg=$(sed -n 's/^cg=//p' <<<"$out")
  pidns=$(sed -n 's/^pidns=//p' <<<"$out")
  init=$(sed -n 's/^init=//p' <<<"$out")
  [[ $uid == "$VERIFY_UID" ]] \
    || die "verify: $ENFORCE_CLUSTER srun id -u as $VERIFY_USER printed '$uid', expected $VERIFY_UID (log: $VERIFY_LOG)"
  [[ $cg =~ ^/slurm_${ENFORCE_NODE}/uid_${VERIFY_UID}/job_${job}/step_0/[0-9a-f]{64}$ && $pidns != "$host_pidns" && $init == /sbin/docker-init ]] \
    || die "verify: $ENFORCE_CLUSTER job ${job:-?}'s bare step ran in memory cgroup '$cg', PID namespace '$pidns' (host's $host_pidns), PID 1 '$init': not in a container below its step (logs: $VERIFY_LOG $ENFORCE_SLURMD_LOG)"
  say "verify: $ENFORCE_CLUSTER bare srun as $VERIFY_USER, job $job: uid $uid in a container (memory:${cg%/*}/<id>, own PID namespace, PID 1 $init) by $ENFORCE_SETTINGS"
}

enforce_summary() {
  local ctld slurmd
  ctld=$(daemon_pid "$ENFORCE_SLURMCTLD_PIDFILE" "$ENFORCE_SLURMCTLD_COMM" enforce)
  slurmd=$(daemon_pid "$ENFORCE_SLURMD_PIDFILE" "$ENFORCE_SLURMD_COMM" enforce)
  say "enforce:  cluster $ENFORCE_CLUSTER (SLURM_CONF=$ENFORCE_CONF_PATH); slurmctld ${ctld:-DOWN} (port $ENFORCE_SLURMCTLD_PORT), slurmd ${slurmd:-DOWN} (port $ENFORCE_SLURMD_PORT)"
  say "node:     $(SLURM_CONF=$ENFORCE_CONF_PATH sinfo -h -N -n "$ENFORCE_NODE" -o '%N %T cpus=%c mem=%mMB partition=%P' 2>/dev/null | head -n 1 || echo '?')"
  say "config:   $ENFORCE_CONF_PATH $ENFORCE_CGROUP_CONF $ENFORCE_PLUGSTACK ($ENFORCE_SETTINGS); logs $ENFORCE_LOG_DIR"
}

mpi_summary() {
  local ctld node pid
  ctld=$(daemon_pid "$MPI_SLURMCTLD_PIDFILE" "$MPI_SLURMCTLD_COMM" mpi)
  say "mpi:      cluster $MPI_CLUSTER (SLURM_CONF=$MPI_CONF_PATH); slurmctld ${ctld:-DOWN} (port $MPI_SLURMCTLD_PORT)"
  for node in "${MPI_NODES[@]}"; do
    pid=$(daemon_pid "$(mpi_slurmd_pidfile "$node")" "$MPI_SLURMD_COMM" "mpi:$node")
    say "node:     $node slurmd ${pid:-DOWN}: $(SLURM_CONF=$MPI_CONF_PATH sinfo -h -N -n "$node" -o '%T cpus=%c mem=%mMB partition=%P' 2>/dev/null | head -n 1 || echo '?')"
  done
  say "config:   $MPI_CONF_PATH $MPI_CGROUP_CONF; logs $MPI_LOG_DIR"
}

# ----------------------------------------------------------------- summary --
summary() {
  local ctld slurmd munged
  munged=$(daemon_pid "$MUNGED_PIDFILE" munged)
  ctld=$(daemon_pid "$SLURMCTLD_PIDFILE" slurmctld)
  slurmd=$(daemon_pid "$SLURMD_PIDFILE" slurmd)
  say "slurm:    $(slurm_version); cluster $SLURM_CLUSTER; munged ${munged:-DOWN}, slurmctld ${ctld:-DOWN}, slurmd ${slurmd:-DOWN}"
  say "node:     $(sinfo -h -N -n "$NODE" -o '%N %T cpus=%c mem=%mMB partition=%P' 2>/dev/null | head -n 1 || echo '?')"
  say "config:   $SLURM_CONF_PATH $CGROUP_CONF; logs $SLURMCTLD_LOG $SLURMD_LOG $MUNGED_LOG"
  say "spank:    $SPANK_PLUGSTACK: $(grep -c '^required ' "$SPANK_PLUGSTACK" 2>/dev/null || true) plugins ($SPANK_SO, $SPANK_TEST_SO)"
  ctld=$(daemon_pid "$TMPFS_SLURMCTLD_PIDFILE" slurmctld tmpfs)
  slurmd=$(daemon_pid "$TMPFS_SLURMD_PIDFILE" slurmd tmpfs)
  say "tmpfs:    cluster $TMPFS_CLUSTER (SLURM_CONF=$TMPFS_CONF_PATH); slurmctld ${ctld:-DOWN} (port $TMPFS_SLURMCTLD_PORT), slurmd ${slurmd:-DOWN} (port $TMPFS_SLURMD_PORT)"
  say "node:     $(SLURM_CONF=$TMPFS_CONF_PATH sinfo -h -N -n "$TMPFS_NODE" -o '%N %T cpus=%c mem=%mMB partition=%P' 2>/dev/null | head -n 1 || echo '?'); job_container/tmpfs BasePath $TMPFS_BASEPATH/$TMPFS_NODE"
  say "config:   $TMPFS_CONF_PATH $TMPFS_CGROUP_CONF $TMPFS_JC_CONF; logs $TMPFS_SLURMCTLD_LOG $TMPFS_SLURMD_LOG"
}

# ---------------------------------------------------------------- commands --
cmd_up() {
  local do_verify=$1 start=$SECONDS
  need_root up
  make_dirs
  take_lock
  ensure_packages "${SLURM_PACKAGES[@]}"
  say "slurm $(slurm_version)"
  ensure_munge_key
  ensure_munged
  ensure_config
  ensure_spank
  use_cluster main
  ensure_slurm
  ensure_tmpfs_config
  use_cluster tmpfs
  ensure_slurm
  use_cluster main
  ensure_packages "${MPI_PACKAGES[@]}"
  ensure_mpi_config
  ensure_mpi_slurm
  ensure_mpi_image
  ensure_enforce_config
  ensure_enforce_slurm
  if ((do_verify)); then verify; verify_tmpfs; verify_mpi; verify_enforce; fi
  summary
  mpi_summary
  enforce_summary
  say "up done in $((SECONDS - start))s"
}

cmd_verify() {
  need_root verify
  make_dirs
  take_lock
  slurmctld_answers || die "slurmctld not answering; run: $0 up"
  SLURM_CONF=$TMPFS_CONF_PATH slurmctld_answers || die "$TMPFS_CLUSTER slurmctld not answering; run: $0 up"
  SLURM_CONF=$ENFORCE_CONF_PATH slurmctld_answers || die "$ENFORCE_CLUSTER slurmctld not answering; run: $0 up"
  verify
  verify_tmpfs
  verify_enforce
}

cmd_down() {
  local pid comm pidfile which
  need_root down
  make_dirs
  take_lock
  mpi_stop
  enforce_stop
  for comm in tmpfs:slurmd tmpfs:slurmctld slurmd slurmctld munged; do
    which=main
    case $comm in
      tmpfs:slurmd) pidfile=$TMPFS_SLURMD_PIDFILE which=tmpfs ;;
      tmpfs:slurmctld) pidfile=$TMPFS_SLURMCTLD_PIDFILE which=tmpfs ;;
      slurmd) pidfile=$SLURMD_PIDFILE ;;
      slurmctld) pidfile=$SLURMCTLD_PIDFILE ;;
      munged) pidfile=$MUNGED_PIDFILE ;;
    esac
    comm=${comm#tmpfs:}
    local what=$comm
    [[ $which == tmpfs ]] && what="$TMPFS_CLUSTER $comm"
    pid=$(daemon_pid "$pidfile" "$comm" "$which")
    if [[ -n $pid ]]; then
      stop_pid "$pid" "$comm" "$what" 30
      say "$what stopped (pid $pid)"
    else
      say "$what not running"
    fi
    rm -f "$pidfile"
  done
}

# status_cluster main|tmpfs|enforce: the cluster's slurmctld, slurmd and node; 1 if
# any is not up.
status_cluster() {
  local rc=0 pid state
  use_cluster "$1"
  pid=$(daemon_pid "$CL_SLURMCTLD_PIDFILE" "$CL_SLURMCTLD_COMM" "$CL")
  if [[ -n $pid ]] && slurmctld_answers; then
    say "${CL_NAME}slurmctld running (pid $pid), scontrol ping UP"
  else
    say "${CL_NAME}slurmctld NOT answering (pid ${pid:-none})"; rc=1
  fi
  pid=$(daemon_pid "$CL_SLURMD_PIDFILE" "$CL_SLURMD_COMM" "$CL")
  if [[ -n $pid ]]; then
    say "${CL_NAME}slurmd running (pid $pid)"
  else
    say "${CL_NAME}slurmd NOT running"; rc=1
  fi
  state=""
  if slurmctld_answers; then state=$(node_state || true); fi
  if ((rc == 0)) && node_usable; then
    say "node $CL_NODE $state"
  else
    say "node $CL_NODE NOT usable (state '${state:-unknown}'${state:+, $(node_reason)})"; rc=1
  fi
  use_cluster main
  return "$rc"
}

cmd_status() {
  local rc=0 pid
  pid=$(daemon_pid "$MUNGED_PIDFILE" munged)
  if [[ -n $pid ]] && munge_works; then
    say "munged running (pid $pid), munge -n | unmunge ok"
  else
    say "munged NOT working (pid ${pid:-none})"; rc=1
  fi
  status_cluster main || rc=1
  status_cluster tmpfs || rc=1
  cmd_mpi_status || rc=1
  status_cluster enforce || rc=1
  if slurmctld_answers; then summary; fi
  return "$rc"
}

# The MPI cluster alone: munged (shared, started if missing; never restarted if it answers),
# libpmix2, its config and its daemons. The other clusters' daemons are not touched.
cmd_mpi_up() {
  local do_verify=$1 start=$SECONDS
  need_root mpi-up
  make_dirs
  take_lock
  ensure_packages "${SLURM_PACKAGES[@]}" "${MPI_PACKAGES[@]}"
  ensure_munge_key
  ensure_munged
  ensure_mpi_config
  ensure_mpi_slurm
  ensure_testbed
  ensure_mpi_image
  if ((do_verify)); then make_work_dir; verify_mpi; fi
  mpi_summary
  say "mpi-up done in $((SECONDS - start))s"
}

cmd_mpi_down() {
  need_root mpi-down
  make_dirs
  take_lock
  mpi_stop
}

mpi_stop() {
  local node pid pidfile
  for node in "${MPI_NODES[@]}"; do
    pidfile=$(mpi_slurmd_pidfile "$node")
    pid=$(daemon_pid "$pidfile" "$MPI_SLURMD_COMM" "mpi:$node")
    if [[ -n $pid ]]; then stop_pid "$pid" "$MPI_SLURMD_COMM" "$MPI_CLUSTER slurmd $node" 30; say "$MPI_CLUSTER slurmd $node stopped (pid $pid)"; fi
    rm -f "$pidfile"
  done
  pid=$(daemon_pid "$MPI_SLURMCTLD_PIDFILE" "$MPI_SLURMCTLD_COMM" mpi)
  if [[ -n $pid ]]; then stop_pid "$pid" "$MPI_SLURMCTLD_COMM" "$MPI_CLUSTER slurmctld" 30; say "$MPI_CLUSTER slurmctld stopped (pid $pid)"; fi
  rm -f "$MPI_SLURMCTLD_PIDFILE"
}

cmd_mpi_status() {
  local rc=0 node pid
  use_cluster mpi
  pid=$(daemon_pid "$MPI_SLURMCTLD_PIDFILE" "$MPI_SLURMCTLD_COMM" mpi)
  if [[ -n $pid ]] && slurmctld_answers; then say "${CL_NAME}slurmctld running (pid $pid)"; else say "${CL_NAME}slurmctld NOT answering"; rc=1; fi
  for node in "${MPI_NODES[@]}"; do
    use_cluster "mpi:$node"
    pid=$(daemon_pid "$CL_SLURMD_PIDFILE" "$CL_SLURMD_COMM" "$CL")
    if [[ -n $pid ]] && node_usable; then say "${CL_NAME}node $node $(node_state) (slurmd pid $pid)"; else say "${CL_NAME}node $node NOT usable (slurmd ${pid:-none}, state '$(node_state || true)')"; rc=1; fi
  done
  use_cluster main
  return "$rc"
}

# The enforce cluster alone: munged (shared, started if missing; never restarted if it answers),
# its config (the installed package's plugin line) and its daemons. The other clusters' daemons
# are not touched.
cmd_enforce_up() {
  local do_verify=$1 start=$SECONDS
  need_root enforce-up
  make_dirs
  take_lock
  ensure_packages "${SLURM_PACKAGES[@]}"
  ensure_munge_key
  ensure_munged
  ensure_enforce_config
  ensure_enforce_slurm
  ensure_testbed
  if ((do_verify)); then make_work_dir; verify_enforce; fi
  enforce_summary
  say "enforce-up done in $((SECONDS - start))s"
}

enforce_stop() {
  local pid
  pid=$(daemon_pid "$ENFORCE_SLURMD_PIDFILE" "$ENFORCE_SLURMD_COMM" enforce)
  if [[ -n $pid ]]; then stop_pid "$pid" "$ENFORCE_SLURMD_COMM" "$ENFORCE_CLUSTER slurmd" 30; say "$ENFORCE_CLUSTER slurmd stopped (pid $pid)"; fi
  rm -f "$ENFORCE_SLURMD_PIDFILE"
  pid=$(daemon_pid "$ENFORCE_SLURMCTLD_PIDFILE" "$ENFORCE_SLURMCTLD_COMM" enforce)
  if [[ -n $pid ]]; then stop_pid "$pid" "$ENFORCE_SLURMCTLD_COMM" "$ENFORCE_CLUSTER slurmctld" 30; say "$ENFORCE_CLUSTER slurmctld stopped (pid $pid)"; fi
  rm -f "$ENFORCE_SLURMCTLD_PIDFILE"
}

usage() {
  sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=up do_verify=1 arg
  for arg in "$@"; do
    case $arg in
      up | down | status | verify | mpi-up | mpi-down | mpi-status | mpi-verify) cmd=$arg ;;
      enforce-up | enforce-down | enforce-status | enforce-verify) cmd=$arg ;;
      --no-verify) do_verify=0 ;;
      -h | --help | help) usage; return 0 ;;
      *) usage >&2; die "unknown argument: $arg" ;;
    esac
  done
  case $cmd in
    up) cmd_up "$do_verify" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    verify) cmd_verify ;;
    mpi-up) cmd_mpi_up "$do_verify" ;;
    mpi-down) cmd_mpi_down ;;
    mpi-status) cmd_mpi_status ;;
    mpi-verify) need_root mpi-verify; make_dirs; take_lock; make_work_dir; verify_mpi ;;
    enforce-up) cmd_enforce_up "$do_verify" ;;
    enforce-down) need_root enforce-down; make_dirs; take_lock; enforce_stop ;;
    enforce-status) status_cluster enforce ;;
    enforce-verify) need_root enforce-verify; make_dirs; take_lock; make_work_dir; verify_enforce ;;
  esac
}

main "$@"
