#!/usr/bin/env bash
# jobdock test bed: a Docker daemon, local test images, a local registry and
# non-root test users on a Debian machine without systemd.
#
#   scripts/testbed.sh [up] [--rebuild]   bring everything up (idempotent)
#   scripts/testbed.sh down               stop the registry and dockerd started here
#   scripts/testbed.sh status             report; exit 1 if daemon or registry is down
#   scripts/testbed.sh debian-image       only the Debian 12 image of the package test (and
#                                         the tools that build and check the .deb)
#
# Must run as root. Each step prints one "testbed: ..." line; noisy command
# output goes to files in /var/log/jobdock-testbed (TESTBED_LOG_DIR).
set -euo pipefail

# ---------------------------------------------------------------- settings --
TESTBED_LOG_DIR=/var/log/jobdock-testbed
TESTBED_ETC_DIR=/etc/jobdock-testbed
TESTBED_STATE_DIR=/var/lib/jobdock-testbed
TESTBED_RUN_DIR=/run/jobdock-testbed
TESTBED_LOCK=$TESTBED_RUN_DIR/testbed.lock
TESTBED_UA=jobdock-testbed            # User-Agent of this script's own registry requests

APT_LOG=$TESTBED_LOG_DIR/apt.log
IMAGES_LOG=$TESTBED_LOG_DIR/images.log
PUSH_LOG=$TESTBED_LOG_DIR/push.log
USERS_LOG=$TESTBED_LOG_DIR/users.log

DOCKER_PACKAGES=(docker.io)
BASE_PACKAGES=(busybox-static docker-registry curl apache2-utils man-db)   # htpasswd: the private registry; man: the page test
POLICY_RC_D=/usr/sbin/policy-rc.d     # keeps package postinst from starting daemons

# A syslog daemon, as on a site's node: it makes /dev/log, where jobdock sends each job's audit
# record (authpriv: /var/log/auth.log), which the tests read back.
SYSLOG_PACKAGES=(rsyslog)
RSYSLOGD_BIN=/usr/sbin/rsyslogd
RSYSLOGD_PIDFILE=/run/rsyslogd.pid
SYSLOG_SOCKET=/dev/log
AUTH_LOG=/var/log/auth.log

DOCKERD_BIN=/usr/sbin/dockerd
DOCKER_SOCK=/var/run/docker.sock
DOCKER_PIDFILE=/var/run/docker.pid    # written by dockerd itself
DOCKER_DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_PIDFILE=$TESTBED_RUN_DIR/dockerd.pid   # exists = dockerd was started by this script
DOCKERD_LOG=$TESTBED_LOG_DIR/dockerd.log
DOCKERD_STORAGE_DRIVER=overlay2
DOCKERD_WAIT=${TESTBED_DOCKERD_WAIT:-60}       # seconds
DOCKER_CLIENTS=(/usr/bin/docker /usr/local/bin/docker)   # first one that answers wins

# dockerd 20.10 uses a system containerd if this socket exists, else it starts
# and supervises its own containerd under $CONTAINERD_MANAGED_DIR.
CONTAINERD_SYSTEM_SOCK=/run/containerd/containerd.sock
CONTAINERD_MANAGED_DIR=/var/run/docker/containerd
CONTAINERD_MANAGED_PIDFILE=$CONTAINERD_MANAGED_DIR/containerd.pid

REGISTRY_BIN=/usr/bin/docker-registry
REGISTRY_USER=docker-registry         # system user made by the docker-registry package
REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_URL=http://$REGISTRY_ADDR
REGISTRY_CONFIG=$TESTBED_ETC_DIR/registry.yml
REGISTRY_STORAGE=$TESTBED_STATE_DIR/registry
REGISTRY_LOG=$TESTBED_LOG_DIR/registry.log          # access log (stdout): one line per request
REGISTRY_APP_LOG=$TESTBED_LOG_DIR/registry-app.log  # application log (stderr)
REGISTRY_PIDFILE=$TESTBED_RUN_DIR/registry.pid
REGISTRY_WAIT=${TESTBED_REGISTRY_WAIT:-20}          # seconds
# A second registry that requires a login (htpasswd), for the private-image tests (issue 11):
# only jdbob has an account, in his ~/.docker/config.json; root pushes with the same account
# from AUTH_REGISTRY_DOCKER_CONFIG (`docker --config DIR push ...`). dockerd treats 127.0.0.0/8
# as insecure, so plain HTTP works as for $REGISTRY_ADDR.
AUTH_REGISTRY_ADDR=127.0.0.1:5001
AUTH_REGISTRY_URL=http://$AUTH_REGISTRY_ADDR
AUTH_REGISTRY_CONFIG=$TESTBED_ETC_DIR/registry-auth.yml
AUTH_REGISTRY_HTPASSWD=$TESTBED_ETC_DIR/registry-auth.htpasswd
AUTH_REGISTRY_PASSWORD_FILE=$TESTBED_ETC_DIR/registry-auth.password   # jdbob's, root 0600
AUTH_REGISTRY_DOCKER_CONFIG=$TESTBED_ETC_DIR/registry-auth.docker     # root's login, for pushes
AUTH_REGISTRY_ACCOUNT=jdbob
AUTH_REGISTRY_STORAGE=$TESTBED_STATE_DIR/registry-auth
AUTH_REGISTRY_LOG=$TESTBED_LOG_DIR/registry-auth.log
AUTH_REGISTRY_APP_LOG=$TESTBED_LOG_DIR/registry-auth-app.log
AUTH_REGISTRY_PIDFILE=$TESTBED_RUN_DIR/registry-auth.pid

BUSYBOX_BIN=/bin/busybox
IMAGE_BUSYBOX=jobdock-test/busybox:latest
IMAGE_NOSHELL=jobdock-test/noshell:latest
REGISTRY_REPO=jobdock-test/busybox
REGISTRY_TAG=latest
IMAGE_REMOTE=$REGISTRY_ADDR/$REGISTRY_REPO:$REGISTRY_TAG
IMAGE_PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Images whose contents attack the job (tests/main/security.rs): a passwd and group claiming the test
# user's uid, name and groups as root's, a setuid-root program, programs with file capabilities,
# a device node, a WORKDIR in /proc and an entrypoint that tries to become root.
IMAGE_HOSTILE=jobdock-test/hostile:latest
IMAGE_HOSTILE_WORKDIR=jobdock-test/hostile-workdir:latest
IMAGE_HOSTILE_ENTRYPOINT=jobdock-test/hostile-entrypoint:latest
# An image with a HEALTHCHECK that runs every second: dockerd execs it in the container, with
# groups resolved by name in the container's current /etc/group (issue 11.1).
IMAGE_HEALTHCHECK=jobdock-test/healthcheck:latest
HEALTHCHECK_RECIPE='FROM jobdock-test/busybox:latest
HEALTHCHECK --interval=1s --timeout=5s --retries=1 CMD ["/bin/sh", "-c", "id > /tmp/healthcheck-ran"]'
# An image with a harmless ENTRYPOINT, which jobdock skips unless the user asks for raw mode.
IMAGE_ENTRYPOINT=jobdock-test/entrypoint:latest
ENTRYPOINT_RECIPE='FROM jobdock-test/busybox:latest
ENTRYPOINT ["/bin/echo", "the image entrypoint ran with:"]'
# A Debian 12 system of its own (debootstrap minbase, with man-db), where tests/main/package.rs
# installs, upgrades, removes and purges the jobdock .deb without touching this machine's /usr.
# Built once per machine; rebuilt when its recipe (the suite, mirror and packages) changes.
IMAGE_DEBIAN=jobdock-test/debian12:latest
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${TESTBED_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_INCLUDE=man-db
DEBIAN_LABEL=jobdock.testbed.debian
# scripts/build-deb.sh (dpkg-deb, dpkg-shlibdeps) and the checks of the package it builds.
PACKAGE_TOOLS=(debootstrap dpkg-dev lintian)
HOSTILE_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/hostile/escalate.c
HOSTILE_PACKAGES=(gcc libc6-dev libcap2-bin)
HOSTILE_LABEL=jobdock.testbed.hostile        # its value: a digest of what the images are made of
REQUIRED_APPLETS=(sh id whoami cat ls sleep echo true false env grep head dd kill
  yes wc sha256sum md5sum stat mkdir touch seq printf test)

# name:gid
TEST_GROUPS=(jdalice:2001 jdbob:2002 jdproj:3001 jdshared:3002)
# name:uid:gid:supplementary,groups:home
TEST_USERS=('jdalice:2001:2001:jdproj,jdshared:/home/jdalice'
  'jdbob:2002:2002:jdshared:/home/jdbob')

# ----------------------------------------------------------------- helpers --
LIB_NAME=testbed
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKER_CLI=""

# sock_listening PATH: something accepts connections on the unix socket.
# curl exit 7 = connection refused = stale socket file.
sock_listening() {
  local rc=0
  [[ -S $1 ]] || return 1
  curl -s -o /dev/null --max-time 2 --unix-socket "$1" http://localhost/ 2>/dev/null || rc=$?
  [[ $rc -ne 7 ]]
}

daemon_answers() {
  [[ -S $DOCKER_SOCK ]] || return 1
  if command -v curl >/dev/null 2>&1; then
    [[ $(curl -fsS --max-time 5 --unix-socket "$DOCKER_SOCK" http://localhost/_ping 2>/dev/null) == OK ]]
  else
    local c
    for c in "${DOCKER_CLIENTS[@]}"; do
      [[ -x $c ]] || continue
      DOCKER_HOST=unix://$DOCKER_SOCK "$c" version --format '{{.Server.Version}}' >/dev/null 2>&1 && return 0
    done
    return 1
  fi
}

registry_answers() {
  curl -fsS --max-time 5 -A "$TESTBED_UA" -o /dev/null "$REGISTRY_URL/v2/" 2>/dev/null
}

# dk ARGS...: the chosen docker client, always talking to $DOCKER_SOCK.
dk() { DOCKER_HOST=unix://$DOCKER_SOCK "$DOCKER_CLI" "$@"; }

pick_docker_cli() {
  local c
  for c in "${DOCKER_CLIENTS[@]}" "$(command -v docker 2>/dev/null || true)"; do
    [[ -n $c && -x $c ]] || continue
    if DOCKER_HOST=unix://$DOCKER_SOCK "$c" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      DOCKER_CLI=$c
      return 0
    fi
  done
  die "no docker client (${DOCKER_CLIENTS[*]}) can talk to the daemon on $DOCKER_SOCK"
}

make_dirs() {
  install -d -m 0755 "$TESTBED_LOG_DIR" "$TESTBED_ETC_DIR" "$TESTBED_STATE_DIR" "$TESTBED_RUN_DIR"
}

# run_locked ARGS...: re-run this script under an exclusive lock so that two
# up/down runs never interleave. flock -o keeps the lock fd out of the script
# (and so out of the daemons it starts, which would otherwise hold it forever).
LOCK_BUSY=199
run_locked() {
  local rc=0
  export TESTBED_LOCKED=1
  flock -n -E "$LOCK_BUSY" -o "$TESTBED_LOCK" "$BASH" "${BASH_SOURCE[0]}" "$@" || rc=$?
  if ((rc == LOCK_BUSY)); then
    say "waiting for another testbed.sh run (lock $TESTBED_LOCK)"
    rc=0
    flock -w 600 -E "$LOCK_BUSY" -o "$TESTBED_LOCK" "$BASH" "${BASH_SOURCE[0]}" "$@" || rc=$?
    ((rc != LOCK_BUSY)) || die "another testbed.sh still holds $TESTBED_LOCK after 600s"
  fi
  return "$rc"
}

# ----------------------------------------------------------------- dockerd --
# Remove pid files and sockets left behind by killed daemons. Only called
# when nothing answers on $DOCKER_SOCK.
clean_stale_docker_files() {
  local removed=() pid f
  pid=$(pidfile_pid "$DOCKER_PIDFILE")
  if [[ -e $DOCKER_PIDFILE ]] && ! pid_is "$pid" dockerd; then
    rm -f "$DOCKER_PIDFILE"; removed+=("$DOCKER_PIDFILE")
  fi
  pid=$(pidfile_pid "$DOCKERD_PIDFILE")
  if [[ -e $DOCKERD_PIDFILE ]] && ! pid_is "$pid" dockerd; then
    rm -f "$DOCKERD_PIDFILE"; removed+=("$DOCKERD_PIDFILE")
  fi
  if [[ -e $DOCKER_SOCK ]]; then
    rm -f "$DOCKER_SOCK"; removed+=("$DOCKER_SOCK")
  fi
  # A dead system containerd socket would make dockerd try (and fail) to use it.
  if [[ -e $CONTAINERD_SYSTEM_SOCK ]] && ! sock_listening "$CONTAINERD_SYSTEM_SOCK"; then
    rm -f "$CONTAINERD_SYSTEM_SOCK" "$CONTAINERD_SYSTEM_SOCK.ttrpc"
    removed+=("$CONTAINERD_SYSTEM_SOCK")
  fi
  # dockerd's own containerd: dockerd re-adopts a live one via its pid file,
  # so keep a working one, drop a hung one and anything stale.
  pid=$(pidfile_pid "$CONTAINERD_MANAGED_PIDFILE")
  if pid_is "$pid" containerd && ! sock_listening "$CONTAINERD_MANAGED_DIR/containerd.sock"; then
    stop_pid "$pid" containerd "orphaned containerd" 10
  fi
  if ! pid_is "$pid" containerd; then
    for f in "$CONTAINERD_MANAGED_PIDFILE" "$CONTAINERD_MANAGED_DIR/containerd.sock" \
      "$CONTAINERD_MANAGED_DIR/containerd.sock.ttrpc" "$CONTAINERD_MANAGED_DIR/containerd-debug.sock"; do
      if [[ -e $f ]]; then rm -f "$f"; removed+=("$f"); fi
    done
  fi
  if ((${#removed[@]})); then
    say "removed stale files: ${removed[*]}"
  fi
}

# wait_dockerd: 0 = answers, 1 = timed out, 2 = process died.
wait_dockerd() {
  local deadline=$((SECONDS + DOCKERD_WAIT)) pid
  while ((SECONDS < deadline)); do
    daemon_answers && return 0
    pid=$(pidfile_pid "$DOCKERD_PIDFILE")
    if [[ -n $pid ]] && ! pid_is "$pid" dockerd; then
      daemon_answers && return 0
      return 2
    fi
    sleep 0.5
  done
  return 1
}

# start_dockerd [STORAGE_DRIVER]
start_dockerd() {
  local driver=${1:-} args
  args=(--host "unix://$DOCKER_SOCK" --pidfile "$DOCKER_PIDFILE")
  if [[ -n $driver ]]; then args+=(--storage-driver "$driver"); fi
  printf '=== %s testbed: starting %s %s\n' "$(date -u +%FT%TZ)" "$DOCKERD_BIN" "${args[*]}" >>"$DOCKERD_LOG"
  # --background forks and calls setsid(): dockerd outlives this script.
  start-stop-daemon --start --background --no-close --make-pidfile \
    --pidfile "$DOCKERD_PIDFILE" --exec "$DOCKERD_BIN" -- "${args[@]}" \
    </dev/null >>"$DOCKERD_LOG" 2>&1 || die "start-stop-daemon could not start $DOCKERD_BIN"
}

daemon_json_sets_storage() {
  [[ -f $DOCKER_DAEMON_JSON ]] && grep -q '"storage-driver"' "$DOCKER_DAEMON_JSON"
}

ensure_dockerd() {
  local pid ours rc offset driver
  ours=$(pidfile_pid "$DOCKERD_PIDFILE")
  # dockerd creates its default bridge at startup only; if something deleted docker0 since,
  # every container on the default network fails to start until dockerd restarts.
  if daemon_answers && [[ ! -e /sys/class/net/docker0 ]] && pid_is "$ours" dockerd; then
    say "dockerd (pid $ours) lost its bridge docker0; restarting it"
    stop_pid "$ours" dockerd dockerd 20
  fi
  if daemon_answers; then
    ensure_packages "${BASE_PACKAGES[@]}"
    pick_docker_cli
    [[ -e /sys/class/net/docker0 ]] || warn "bridge docker0 is missing: containers on the default network will fail"
    if pid_is "$ours" dockerd; then
      say "dockerd already answering on $DOCKER_SOCK (pid $ours, started by testbed)"
    else
      say "a docker daemon already answers on $DOCKER_SOCK (not started by testbed; using it)"
    fi
    return 0
  fi

  ensure_packages "${DOCKER_PACKAGES[@]}" "${BASE_PACKAGES[@]}"
  [[ -x $DOCKERD_BIN ]] || die "$DOCKERD_BIN missing although docker.io is installed"

  # A dockerd that is alive but not answering: still starting, or hung.
  ours=$(pidfile_pid "$DOCKERD_PIDFILE")
  for pid in "$ours" "$(pidfile_pid "$DOCKER_PIDFILE")"; do
    pid_is "$pid" dockerd || continue
    say "dockerd pid $pid is alive but not answering; waiting up to ${DOCKERD_WAIT}s"
    rc=0; wait_dockerd || rc=$?
    if ((rc == 0)); then
      pick_docker_cli
      say "dockerd (pid $pid) answers now"
      return 0
    fi
    if [[ $pid == "$ours" ]]; then
      say "stopping unresponsive dockerd pid $pid (started by testbed)"
      stop_pid "$pid" dockerd dockerd 20
    else
      tail_log "$DOCKERD_LOG"
      die "dockerd pid $pid (not started by testbed) does not answer on $DOCKER_SOCK; stop it and re-run"
    fi
  done

  clean_stale_docker_files

  driver=$DOCKERD_STORAGE_DRIVER
  if daemon_json_sets_storage; then driver=""; fi
  offset=$(file_size "$DOCKERD_LOG")
  start_dockerd "$driver"
  rc=0; wait_dockerd || rc=$?
  if ((rc == 2)) && [[ -n $driver ]] && tail -c +"$((offset + 1))" "$DOCKERD_LOG" | grep -qi "$driver"; then
    say "storage driver $driver does not work here; letting dockerd choose"
    clean_stale_docker_files
    offset=$(file_size "$DOCKERD_LOG")
    start_dockerd ""
    rc=0; wait_dockerd || rc=$?
  fi
  case $rc in
    0) ;;
    1) tail_log "$DOCKERD_LOG" "$offset"
       die "dockerd did not answer on $DOCKER_SOCK within ${DOCKERD_WAIT}s (log: $DOCKERD_LOG)" ;;
    *) tail_log "$DOCKERD_LOG" "$offset"
       die "dockerd exited during startup (log: $DOCKERD_LOG)" ;;
  esac
  pick_docker_cli
  say "dockerd started (pid $(pidfile_pid "$DOCKERD_PIDFILE"), storage $(dk info --format '{{.Driver}}'), log $DOCKERD_LOG)"
}

# ------------------------------------------------------------------ images --
# build_recipe_image REBUILD IMAGE RECIPE NAME: builds IMAGE from the Dockerfile text RECIPE,
# labelled with the recipe's digest; returns 1 (and builds nothing) when the image present was
# built from this very recipe.
build_recipe_image() {
  local rebuild=$1 image=$2 recipe=$3 name=$4 digest dir
  digest=$(sha256sum <<<"$recipe" | cut -c1-16)
  if ((rebuild == 0)) && [[ $(dk image inspect -f '{{index .Config.Labels "jobdock.testbed.recipe"}}' "$image" 2>/dev/null) == "$digest" ]]; then
    say "image $image present"
    return 1
  fi
  dir=$WORK_DIR/$name
  rm -rf "$dir"; mkdir -p "$dir"
  printf '%s\nLABEL jobdock.testbed.recipe=%s\n' "$recipe" "$digest" >"$dir/Dockerfile"
  DOCKER_BUILDKIT=0 run_logged "$IMAGES_LOG" dk build -q -t "$image" "$dir" \
    || { tail_log "$IMAGES_LOG"; die "building $image failed"; }
}

ensure_entrypoint_image() {
  build_recipe_image "$1" "$IMAGE_ENTRYPOINT" "$ENTRYPOINT_RECIPE" entrypoint || return 0
  say "image $IMAGE_ENTRYPOINT built"
}

# ------------------------------------------------------------------ syslog --
syslog_answers() {
  [[ -S $SYSLOG_SOCKET ]] && logger --socket-errors=on -u "$SYSLOG_SOCKET" -p authpriv.debug "testbed: syslog check" 2>/dev/null
}

ensure_syslog() {
  local pid
  ensure_packages "${SYSLOG_PACKAGES[@]}"
  pid=$(pidfile_pid "$RSYSLOGD_PIDFILE")
  if pid_is "$pid" rsyslogd && syslog_answers; then
    say "syslog running (pid $pid, $SYSLOG_SOCKET)"
    return 0
  fi
  # A session's end leaves the pid file and the socket behind.
  stop_pid "$pid" rsyslogd rsyslogd 10
  rm -f "$RSYSLOGD_PIDFILE"
  [[ -S $SYSLOG_SOCKET ]] && rm -f "$SYSLOG_SOCKET"
  "$RSYSLOGD_BIN" -i "$RSYSLOGD_PIDFILE" || die "rsyslogd did not start"
  local i
  for ((i = 0; i < 50; i++)); do
    syslog_answers && break
    sleep 0.1
  done
  syslog_answers || die "rsyslogd started but nothing answers on $SYSLOG_SOCKET"
  say "syslog started (pid $(pidfile_pid "$RSYSLOGD_PIDFILE"), $SYSLOG_SOCKET -> $AUTH_LOG)"
}

image_exists() { dk image inspect "$1" >/dev/null 2>&1; }

# Scratch space, removed on exit. Call outside $(...) so the cleanup is registered.
WORK_DIR=""
make_work_dir() {
  [[ -n $WORK_DIR ]] && return 0
  WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/jobdock-testbed.XXXXXX")
  CLEANUP_PATHS+=("$WORK_DIR")
}

build_busybox_rootfs() {
  local root=$1 applet
  [[ -x $BUSYBOX_BIN ]] || die "$BUSYBOX_BIN missing (package busybox-static)"
  install -d -m 0755 "$root"/{bin,sbin,etc,usr,usr/bin,usr/sbin,home,dev,proc,sys,run,var}
  install -d -m 0700 "$root/root"
  install -d -m 1777 "$root/tmp" "$root/var/tmp"
  install -m 0755 "$BUSYBOX_BIN" "$root/bin/busybox"
  # Every applet busybox has, as a symlink in /bin.
  while read -r applet; do
    [[ -n $applet && $applet != busybox && ! -e $root/bin/$applet ]] || continue
    ln -s busybox "$root/bin/$applet"
  done < <("$BUSYBOX_BIN" --list)
  for applet in "${REQUIRED_APPLETS[@]}"; do
    [[ -L $root/bin/$applet ]] || die "$BUSYBOX_BIN has no '$applet' applet"
  done
  ln -s ../../bin/busybox "$root/usr/bin/env"    # for "#!/usr/bin/env" scripts
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
EOF
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
}

# import_rootfs DIR IMAGE CHANGE...: tar DIR (as root-owned) into IMAGE.
import_rootfs() {
  local root=$1 image=$2; shift 2
  local changes=() c
  for c in "$@"; do changes+=(--change "$c"); done
  printf '=== %s import %s\n' "$(date -u +%FT%TZ)" "$image" >>"$IMAGES_LOG"
  if ! tar --numeric-owner --owner=0 --group=0 --xattrs --xattrs-include='security.capability' \
    -C "$root" -c . 2>>"$IMAGES_LOG" \
    | dk import "${changes[@]}" - "$image" >>"$IMAGES_LOG" 2>&1; then
    tail_log "$IMAGES_LOG"
    die "docker import of $image failed (log: $IMAGES_LOG)"
  fi
}

ensure_images() {
  local rebuild=$1 tmp
  if ((rebuild == 0)) && image_exists "$IMAGE_BUSYBOX"; then
    say "image $IMAGE_BUSYBOX present"
  else
    tmp=$WORK_DIR/busybox
    build_busybox_rootfs "$tmp/rootfs"
    import_rootfs "$tmp/rootfs" "$IMAGE_BUSYBOX" "ENV $IMAGE_PATH_ENV" 'CMD ["/bin/sh"]'
    dk run --rm --network none "$IMAGE_BUSYBOX" true >>"$IMAGES_LOG" 2>&1 \
      || { tail_log "$IMAGES_LOG"; die "fresh image $IMAGE_BUSYBOX does not run"; }
    say "image $IMAGE_BUSYBOX built ($(dk image inspect -f '{{.Id}}' "$IMAGE_BUSYBOX" | cut -c1-19))"
  fi

  if ((rebuild == 0)) && image_exists "$IMAGE_NOSHELL"; then
    say "image $IMAGE_NOSHELL present"
  else
    tmp=$WORK_DIR/noshell
    install -d -m 0755 "$tmp/rootfs"
    # One static file; busybox picks the applet from argv[0]'s basename.
    install -m 0755 "$BUSYBOX_BIN" "$tmp/rootfs/true"
    import_rootfs "$tmp/rootfs" "$IMAGE_NOSHELL" 'CMD ["/true"]'
    say "image $IMAGE_NOSHELL built ($(dk image inspect -f '{{.Id}}' "$IMAGE_NOSHELL" | cut -c1-19), no /bin/sh)"
  fi
}

# hostile_digest: what the hostile images are made of (the helper's source and this recipe).
hostile_digest() {
  { cat "$HOSTILE_SRC"; declare -f build_hostile_rootfs; } | sha256sum | cut -c1-16
}

build_hostile_rootfs() {
  local root=$1
  build_busybox_rootfs "$root"
  run_logged "$IMAGES_LOG" gcc -static -O2 -Wall -o "$root/bin/suid-escalate" "$HOSTILE_SRC"
  install -m 0755 "$root/bin/suid-escalate" "$root/bin/cap-escalate"
  install -m 0755 "$root/bin/suid-escalate" "$root/bin/cap-setuid"
  chown 0:0 "$root/bin/suid-escalate"
  chmod 6755 "$root/bin/suid-escalate"
  # CHOWN and KILL are in jobdock's default bounding set: only no-new-privileges stops these.
  run_logged "$IMAGES_LOG" setcap cap_chown,cap_kill+ep "$root/bin/cap-escalate"
  run_logged "$IMAGES_LOG" setcap cap_setuid,cap_setgid+ep "$root/bin/cap-setuid"
  # The test user's uid, name and groups claimed as root's; a user *named* 2001 (CVE-2016-3697)
  # and a group *named* 3001 (the user's first supplementary gid), both with id 0.
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
jdalice:x:0:0:claims root:/root:/bin/sh
2001:x:0:0:numeric name claiming root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:jdalice,jdbob,2001
3001:x:0:jdalice
jdproj:x:0:jdalice
jdalice:x:0:jdalice
docker:x:0:jdalice
disk:x:6:jdalice,jdbob
nobody:x:65534:
EOF
  # /dev/kmsg's numbers, readable and writable by anyone: only the device cgroup stands between
  # the job and the host's kernel log.
  mknod -m 0666 "$root/kmsg" c 1 11
}

ensure_hostile_images() {
  local rebuild=$1 digest img present=1 root out
  digest=$(hostile_digest)
  for img in "$IMAGE_HOSTILE" "$IMAGE_HOSTILE_WORKDIR" "$IMAGE_HOSTILE_ENTRYPOINT"; do
    [[ $(dk image inspect -f "{{index .Config.Labels \"$HOSTILE_LABEL\"}}" "$img" 2>/dev/null) == "$digest" ]] || present=0
  done
  if ((rebuild == 0 && present)); then
    say "hostile images present ($IMAGE_HOSTILE, -workdir, -entrypoint)"
    return 0
  fi
  ensure_packages "${HOSTILE_PACKAGES[@]}"
  root=$WORK_DIR/hostile/rootfs
  build_hostile_rootfs "$root"
  local common=("ENV $IMAGE_PATH_ENV" "LABEL $HOSTILE_LABEL=$digest")
  import_rootfs "$root" "$IMAGE_HOSTILE" "${common[@]}" 'CMD ["/bin/sh"]'
  import_rootfs "$root" "$IMAGE_HOSTILE_WORKDIR" "${common[@]}" 'WORKDIR /proc/self/fd/7' 'CMD ["/bin/sh"]'
  import_rootfs "$root" "$IMAGE_HOSTILE_ENTRYPOINT" "${common[@]}" \
    'ENTRYPOINT ["/bin/suid-escalate"]' 'CMD ["/etc/shadow"]'
  # The images must really be hostile, or the tests that find them harmless prove nothing: without
  # no-new-privileges, the setuid program becomes root and the file capabilities take effect.
  out=$(dk run --rm --network none --user 2001:2001 --cap-drop ALL --cap-add CHOWN --cap-add KILL \
    "$IMAGE_HOSTILE" sh -c '/bin/suid-escalate; /bin/cap-escalate' 2>>"$IMAGES_LOG") \
    || { tail_log "$IMAGES_LOG"; die "the hostile image does not run"; }
  grep -qx 'start.euid=0' <<<"$out" \
    || die "the setuid-root program in $IMAGE_HOSTILE does not make uid 2001 root without no-new-privileges"
  grep -qx 'start.CapEff=0000000000000021' <<<"$out" \
    || die "docker import lost the file capabilities of /bin/cap-escalate (security.capability xattr)"
  say "hostile images built ($IMAGE_HOSTILE, -workdir, -entrypoint; label $HOSTILE_LABEL=$digest)"
}

# The health-check image, built from the busybox one; rebuilt when the recipe changes. The check
# must really run under a plain `docker run`, or the test that finds it off proves nothing.
ensure_healthcheck_image() {
  local cid status="" i
  build_recipe_image "$1" "$IMAGE_HEALTHCHECK" "$HEALTHCHECK_RECIPE" healthcheck || return 0
  cid=$(dk run -d --network none --user 2001:2001 "$IMAGE_HEALTHCHECK" sleep 60 2>>"$IMAGES_LOG") \
    || { tail_log "$IMAGES_LOG"; die "$IMAGE_HEALTHCHECK does not run"; }
  for i in $(seq 1 30); do
    status=$(dk inspect -f '{{.State.Health.Status}}' "$cid" 2>/dev/null || true)
    [[ $status == healthy ]] && break
    sleep 1
  done
  dk rm -f "$cid" >/dev/null 2>&1 || true
  [[ $status == healthy ]] || die "the HEALTHCHECK of $IMAGE_HEALTHCHECK never ran under docker run (status ${status:-none})"
  say "image $IMAGE_HEALTHCHECK built (its HEALTHCHECK runs under docker run: $status)"
}

# debian_digest: what the Debian image is made of.
debian_digest() {
  printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$DEBIAN_INCLUDE" | sha256sum | cut -c1-16
}

ensure_debian_image() {
  local rebuild=$1 digest root
  ensure_packages "${PACKAGE_TOOLS[@]}"
  digest=$(debian_digest)
  if ((rebuild == 0)) \
    && [[ $(dk image inspect -f "{{index .Config.Labels \"$DEBIAN_LABEL\"}}" "$IMAGE_DEBIAN" 2>/dev/null) == "$digest" ]]; then
    say "image $IMAGE_DEBIAN present"
    return 0
  fi
  root=$WORK_DIR/debian/rootfs
  say "image $IMAGE_DEBIAN: debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR (a few minutes, once)"
  run_logged "$IMAGES_LOG" debootstrap --variant=minbase --include="$DEBIAN_INCLUDE" \
    "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR"
  # No package lists or downloaded .debs in the image: the tests install only what they bring.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  import_rootfs "$root" "$IMAGE_DEBIAN" "LABEL $DEBIAN_LABEL=$digest" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["/bin/bash"]'
  dk run --rm --network none "$IMAGE_DEBIAN" dpkg-query -W man-db >>"$IMAGES_LOG" 2>&1 \
    || { tail_log "$IMAGES_LOG"; die "fresh image $IMAGE_DEBIAN does not run dpkg-query"; }
  say "image $IMAGE_DEBIAN built (label $DEBIAN_LABEL=$digest)"
}

# ---------------------------------------------------------------- registry --
write_registry_config() {
  local tmp=$WORK_DIR/registry.yml
  cat >"$tmp" <<EOF
# Written by scripts/testbed.sh; changes are overwritten.
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: registry
  # The access log (Apache combined format, one line per HTTP request) goes to
  # stdout, which testbed.sh appends to $REGISTRY_LOG.
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $REGISTRY_STORAGE
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $REGISTRY_ADDR
  secret: jobdock-testbed-local-only
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  if cmp -s "$tmp" "$REGISTRY_CONFIG"; then
    return 1
  fi
  install -m 0644 "$tmp" "$REGISTRY_CONFIG"
  return 0
}

# The docker-registry serving config $2, by its pid file $1 or, when that got lost, by its
# command line (the pid file is then written again).
find_registry_pid_of() {
  local pidfile=$1 config=$2 pid
  pid=$(pidfile_pid "$pidfile")
  if pid_is "$pid" docker-registry; then printf '%s' "$pid"; return 0; fi
  for pid in $(pgrep -x docker-registry 2>/dev/null || true); do
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$config"; then
      printf '%s' "$pid" >"$pidfile"
      printf '%s' "$pid"
      return 0
    fi
  done
  return 0
}

find_registry_pid() { find_registry_pid_of "$REGISTRY_PIDFILE" "$REGISTRY_CONFIG"; }

start_registry() {
  local chuid=() offset deadline pid
  [[ -x $REGISTRY_BIN ]] || die "$REGISTRY_BIN missing (package docker-registry)"
  install -d -m 0755 "$REGISTRY_STORAGE"
  if id -u "$REGISTRY_USER" >/dev/null 2>&1; then
    chown -R "$REGISTRY_USER:" "$REGISTRY_STORAGE"
    chuid=(--chuid "$REGISTRY_USER")
  fi
  rm -f "$REGISTRY_PIDFILE"
  offset=$(file_size "$REGISTRY_APP_LOG")
  printf '=== %s testbed: starting %s serve %s\n' "$(date -u +%FT%TZ)" "$REGISTRY_BIN" "$REGISTRY_CONFIG" >>"$REGISTRY_APP_LOG"
  start-stop-daemon --start --background --no-close --make-pidfile \
    --pidfile "$REGISTRY_PIDFILE" "${chuid[@]}" --exec "$REGISTRY_BIN" -- serve "$REGISTRY_CONFIG" \
    </dev/null >>"$REGISTRY_LOG" 2>>"$REGISTRY_APP_LOG" || die "start-stop-daemon could not start $REGISTRY_BIN"
  deadline=$((SECONDS + REGISTRY_WAIT))
  while ((SECONDS < deadline)); do
    registry_answers && return 0
    pid=$(pidfile_pid "$REGISTRY_PIDFILE")
    if [[ -n $pid ]] && ! pid_is "$pid" docker-registry; then
      tail_log "$REGISTRY_APP_LOG" "$offset"
      die "registry exited during startup (log: $REGISTRY_APP_LOG)"
    fi
    sleep 0.3
  done
  tail_log "$REGISTRY_APP_LOG" "$offset"
  die "registry did not answer on $REGISTRY_URL/v2/ within ${REGISTRY_WAIT}s"
}

ensure_registry() {
  local changed=0 pid
  write_registry_config && changed=1
  pid=$(find_registry_pid)
  if registry_answers; then
    if [[ -z $pid ]]; then
      die "something not started by testbed answers on $REGISTRY_URL; stop it (its request log would not be $REGISTRY_LOG)"
    fi
    if ((changed == 0)); then
      say "registry already answering on $REGISTRY_URL (pid $pid)"
      return 0
    fi
    say "registry config changed; restarting registry pid $pid"
  elif [[ -n $pid ]]; then
    say "registry pid $pid not answering; restarting it"
  fi
  if [[ -n $pid ]]; then stop_pid "$pid" docker-registry registry 10; fi
  start_registry
  say "registry started on $REGISTRY_URL (pid $(pidfile_pid "$REGISTRY_PIDFILE"), access log $REGISTRY_LOG)"
}

# ------------------------------------------------------- private registry --
# The registry on $AUTH_REGISTRY_ADDR answers 401 without a login.
auth_registry_answers() {
  local code
  code=$(curl -sS --max-time 5 -A "$TESTBED_UA" -o /dev/null -w '%{http_code}' "$AUTH_REGISTRY_URL/v2/" 2>/dev/null) || return 1
  [[ $code == 401 ]]
}

auth_registry_password() {
  if [[ ! -s $AUTH_REGISTRY_PASSWORD_FILE ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$AUTH_REGISTRY_PASSWORD_FILE")
  fi
  cat "$AUTH_REGISTRY_PASSWORD_FILE"
}

# write_auth_registry_config: returns 0 if the config or the account changed.
write_auth_registry_config() {
  local tmp=$WORK_DIR/registry-auth.yml password changed=1
  password=$(auth_registry_password)
  if [[ ! -s $AUTH_REGISTRY_HTPASSWD ]] || ! htpasswd -vb "$AUTH_REGISTRY_HTPASSWD" "$AUTH_REGISTRY_ACCOUNT" "$password" >/dev/null 2>&1; then
    htpasswd -Bbc "$AUTH_REGISTRY_HTPASSWD" "$AUTH_REGISTRY_ACCOUNT" "$password" >/dev/null 2>&1 \
      || die "htpasswd could not write $AUTH_REGISTRY_HTPASSWD"
    chmod 0644 "$AUTH_REGISTRY_HTPASSWD"
    changed=0
  fi
  cat >"$tmp" <<EOF
# Written by scripts/testbed.sh; changes are overwritten.
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: registry-auth
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $AUTH_REGISTRY_STORAGE
  delete:
    enabled: true
auth:
  htpasswd:
    realm: jobdock-testbed
    path: $AUTH_REGISTRY_HTPASSWD
http:
  addr: $AUTH_REGISTRY_ADDR
  secret: jobdock-testbed-local-only
EOF
  if ! cmp -s "$tmp" "$AUTH_REGISTRY_CONFIG"; then
    install -m 0644 "$tmp" "$AUTH_REGISTRY_CONFIG"
    changed=0
  fi
  return "$changed"
}

find_auth_registry_pid() { find_registry_pid_of "$AUTH_REGISTRY_PIDFILE" "$AUTH_REGISTRY_CONFIG"; }

ensure_auth_registry() {
  local changed=0 pid chuid=() offset deadline
  write_auth_registry_config && changed=1
  pid=$(find_auth_registry_pid)
  if auth_registry_answers; then
    [[ -n $pid ]] || die "something not started by testbed answers on $AUTH_REGISTRY_URL; stop it"
    if ((changed == 0)); then
      say "private registry already answering on $AUTH_REGISTRY_URL (pid $pid)"
      return 0
    fi
    say "private registry config changed; restarting pid $pid"
  elif [[ -n $pid ]]; then
    say "private registry pid $pid not answering; restarting it"
  fi
  if [[ -n $pid ]]; then stop_pid "$pid" docker-registry "private registry" 10; fi
  install -d -m 0755 "$AUTH_REGISTRY_STORAGE"
  if id -u "$REGISTRY_USER" >/dev/null 2>&1; then
    chown -R "$REGISTRY_USER:" "$AUTH_REGISTRY_STORAGE"
    chuid=(--chuid "$REGISTRY_USER")
  fi
  rm -f "$AUTH_REGISTRY_PIDFILE"
  offset=$(file_size "$AUTH_REGISTRY_APP_LOG")
  start-stop-daemon --start --background --no-close --make-pidfile \
    --pidfile "$AUTH_REGISTRY_PIDFILE" "${chuid[@]}" --exec "$REGISTRY_BIN" -- serve "$AUTH_REGISTRY_CONFIG" \
    </dev/null >>"$AUTH_REGISTRY_LOG" 2>>"$AUTH_REGISTRY_APP_LOG" || die "start-stop-daemon could not start the private registry"
  deadline=$((SECONDS + REGISTRY_WAIT))
  until auth_registry_answers; do
    pid=$(pidfile_pid "$AUTH_REGISTRY_PIDFILE")
    if ((SECONDS >= deadline)) || { [[ -n $pid ]] && ! pid_is "$pid" docker-registry; }; then
      tail_log "$AUTH_REGISTRY_APP_LOG" "$offset"
      die "private registry did not answer on $AUTH_REGISTRY_URL/v2/ (log: $AUTH_REGISTRY_APP_LOG)"
    fi
    sleep 0.3
  done
  say "private registry started on $AUTH_REGISTRY_URL (pid $(pidfile_pid "$AUTH_REGISTRY_PIDFILE"), account $AUTH_REGISTRY_ACCOUNT)"
}

# docker_auth_json USER PASSWORD: a config.json with one plain auths entry for the private registry.
docker_auth_json() {
  printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$AUTH_REGISTRY_ADDR" "$(printf '%s:%s' "$1" "$2" | base64 -w0)"
}

# jdbob's ~/.docker/config.json and root's push login: both the one account.
ensure_auth_registry_logins() {
  local password home tmp=$WORK_DIR/config.json
  password=$(auth_registry_password)
  docker_auth_json "$AUTH_REGISTRY_ACCOUNT" "$password" >"$tmp"
  install -d -m 0700 "$AUTH_REGISTRY_DOCKER_CONFIG"
  cmp -s "$tmp" "$AUTH_REGISTRY_DOCKER_CONFIG/config.json" || install -m 0600 "$tmp" "$AUTH_REGISTRY_DOCKER_CONFIG/config.json"
  home=$(getent passwd "$AUTH_REGISTRY_ACCOUNT" | cut -d: -f6)
  [[ -n $home ]] || die "user $AUTH_REGISTRY_ACCOUNT missing"
  install -d -m 0700 -o "$AUTH_REGISTRY_ACCOUNT" -g "$AUTH_REGISTRY_ACCOUNT" "$home/.docker"
  cmp -s "$tmp" "$home/.docker/config.json" \
    || install -m 0600 -o "$AUTH_REGISTRY_ACCOUNT" -g "$AUTH_REGISTRY_ACCOUNT" "$tmp" "$home/.docker/config.json"
  rm -f "$tmp"
  say "private registry logins: $home/.docker/config.json, root's in $AUTH_REGISTRY_DOCKER_CONFIG"
}

check_insecure_loopback() {
  local cidrs
  cidrs=$(dk info --format '{{json .RegistryConfig.InsecureRegistryCIDRs}}' 2>/dev/null || true)
  [[ $cidrs == *'"127.0.0.0/8"'* ]] \
    || die "dockerd does not treat 127.0.0.0/8 as an insecure registry (InsecureRegistryCIDRs: ${cidrs:-?}); pushing to $REGISTRY_ADDR would need TLS"
}

remote_digest() {
  curl -fsS --max-time 10 -A "$TESTBED_UA" -I \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "$REGISTRY_URL/v2/$REGISTRY_REPO/manifests/$REGISTRY_TAG" 2>/dev/null \
    | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}

ensure_pushed() {
  local rebuild=$1 digest
  check_insecure_loopback
  digest=$(remote_digest || true)
  if ((rebuild == 0)) && [[ -n $digest ]] && dk image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE_BUSYBOX" 2>/dev/null \
    | grep -qxF "$REGISTRY_ADDR/$REGISTRY_REPO@$digest"; then
    say "$IMAGE_REMOTE already pushed ($digest)"
    return 0
  fi
  run_logged "$PUSH_LOG" dk tag "$IMAGE_BUSYBOX" "$IMAGE_REMOTE"
  run_logged "$PUSH_LOG" dk push "$IMAGE_REMOTE"
  digest=$(remote_digest || true)
  [[ -n $digest ]] || die "push of $IMAGE_REMOTE reported success but the registry has no manifest"
  say "pushed $IMAGE_REMOTE ($digest)"
}

# ------------------------------------------------------------------- users --
ensure_users() {
  local entry name gid uid supp home cur actions=() g
  for entry in "${TEST_GROUPS[@]}"; do
    IFS=: read -r name gid <<<"$entry"
    if cur=$(getent group "$name"); then
      [[ $(cut -d: -f3 <<<"$cur") == "$gid" ]] || die "group $name exists with gid $(cut -d: -f3 <<<"$cur"), expected $gid"
    else
      if getent group "$gid" >/dev/null; then die "gid $gid is taken by group $(getent group "$gid" | cut -d: -f1)"; fi
      run_logged "$USERS_LOG" groupadd -g "$gid" "$name"
      actions+=("group $name")
    fi
  done
  for entry in "${TEST_USERS[@]}"; do
    IFS=: read -r name uid gid supp home <<<"$entry"
    if cur=$(getent passwd "$name"); then
      [[ $(cut -d: -f3,4 <<<"$cur") == "$uid:$gid" ]] \
        || die "user $name exists as $(cut -d: -f3,4 <<<"$cur"), expected $uid:$gid"
      for g in ${supp//,/ }; do
        if ! id -nG "$name" | tr ' ' '\n' | grep -qxF "$g"; then
          run_logged "$USERS_LOG" usermod -a -G "$g" "$name"
          actions+=("$name+$g")
        fi
      done
    else
      if getent passwd "$uid" >/dev/null; then die "uid $uid is taken by user $(getent passwd "$uid" | cut -d: -f1)"; fi
      run_logged "$USERS_LOG" useradd -u "$uid" -g "$gid" -G "$supp" -d "$home" -m -s /bin/bash "$name"
      actions+=("user $name")
    fi
    install -d -m 0700 -o "$uid" -g "$gid" "$home"
    chown "$uid:$gid" "$home"
    chmod 0700 "$home"
  done
  if ((${#actions[@]})); then
    say "users: created/updated ${actions[*]}"
  else
    say "users present: jdalice jdbob"
  fi
}

# -------------------------------------------------------------- site config --
# The test site is the shipped example: /etc/jobdock/wrapper.toml is wrapper.toml.example, and
# its allowed roots /gpfs and /scratch exist with a directory per test user, as on a real site.
# The installed (setuid) jobdock reads only this file, so the tests that run it as an ordinary
# user see exactly what a site that installed the example would. Rewritten on every `up`.
SITE_CONFIG=/etc/jobdock/wrapper.toml
SITE_SSHD_SECRET=/etc/jobdock/sshd.secret
SITE_ROOTS=(/gpfs /scratch)
ensure_site() {
  local here root entry name uid gid
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  install -d -o root -g root -m 0755 "$(dirname "$SITE_CONFIG")"
  install -o root -g root -m 0644 "$here/wrapper.toml.example" "$SITE_CONFIG.new"
  mv -f "$SITE_CONFIG.new" "$SITE_CONFIG"
  # The virtual cluster's secret (mpi.sshd_secret): root's alone, made once, as a site would
  # (and copy to every node: here, all the test nodes are this host).
  if [[ ! -s $SITE_SSHD_SECRET ]]; then
    (umask 077 && head -c 32 /dev/urandom >"$SITE_SSHD_SECRET.new" && mv -f "$SITE_SSHD_SECRET.new" "$SITE_SSHD_SECRET")
  fi
  chown root:root "$SITE_SSHD_SECRET" && chmod 0600 "$SITE_SSHD_SECRET"
  for root in "${SITE_ROOTS[@]}"; do
    install -d -o root -g root -m 0755 "$root"
    for entry in "${TEST_USERS[@]}"; do
      IFS=: read -r name uid gid _ <<<"$entry"
      install -d -o "$uid" -g "$gid" -m 0700 "$root/$name"
    done
  done
  say "site: $SITE_CONFIG from wrapper.toml.example; roots ${SITE_ROOTS[*]} with a directory per test user"
}

# ----------------------------------------------------------------- summary --
users_line() {
  local entry name out=""
  for entry in "${TEST_USERS[@]}"; do
    name=${entry%%:*}
    out+="${out:+; }$(id "$name" 2>/dev/null || echo "$name MISSING")"
  done
  printf '%s' "$out"
}

summary() {
  local v ours rpid img line
  v=$(dk version --format '{{.Server.Version}} (API {{.Server.APIVersion}}, client {{.Client.Version}} API {{.Client.APIVersion}})' 2>/dev/null || echo '?')
  ours=$(pidfile_pid "$DOCKERD_PIDFILE")
  if pid_is "$ours" dockerd; then ours="pid $ours, started by testbed"; else ours="not started by testbed"; fi
  say "docker:   $v via $DOCKER_CLI; storage $(dk info --format '{{.Driver}}, cgroup v{{.CgroupVersion}}' 2>/dev/null); $ours"
  for img in "$IMAGE_BUSYBOX" "$IMAGE_NOSHELL" "$IMAGE_REMOTE" "$IMAGE_HOSTILE" \
    "$IMAGE_HOSTILE_WORKDIR" "$IMAGE_HOSTILE_ENTRYPOINT"; do
    line=$(dk image inspect -f '{{.Id}}' "$img" 2>/dev/null | cut -c1-19) || line=MISSING
    say "image:    $img ${line:-MISSING}"
  done
  rpid=$(pidfile_pid "$REGISTRY_PIDFILE")
  say "registry: $REGISTRY_URL (pid ${rpid:-?}) repo $REGISTRY_REPO:$REGISTRY_TAG; access log $REGISTRY_LOG"
  rpid=$(pidfile_pid "$AUTH_REGISTRY_PIDFILE")
  say "private:  $AUTH_REGISTRY_URL (pid ${rpid:-?}, htpasswd, account $AUTH_REGISTRY_ACCOUNT); access log $AUTH_REGISTRY_LOG"
  say "users:    $(users_line)"
}

# ---------------------------------------------------------------- commands --
cmd_up() {
  local rebuild=$1 start=$SECONDS
  need_root up
  make_dirs
  make_work_dir
  ensure_dockerd
  ensure_images "$rebuild"
  ensure_hostile_images "$rebuild"
  ensure_healthcheck_image "$rebuild"
  ensure_entrypoint_image "$rebuild"
  ensure_debian_image "$rebuild"
  ensure_registry
  ensure_pushed "$rebuild"
  ensure_users
  ensure_auth_registry
  ensure_auth_registry_logins
  ensure_site
  ensure_syslog
  summary
  say "up done in $((SECONDS - start))s"
}

# Only the Debian image (tests/main/package.rs), without the rest of the test bed.
cmd_debian_image() {
  local rebuild=$1
  need_root debian-image
  make_dirs
  make_work_dir
  daemon_answers || die "no docker daemon answers on $DOCKER_SOCK (scripts/testbed.sh up starts it)"
  pick_docker_cli
  ensure_debian_image "$rebuild"
}

cmd_down() {
  local pid
  need_root down
  make_dirs
  pid=$(pidfile_pid "$AUTH_REGISTRY_PIDFILE")
  if pid_is "$pid" docker-registry; then
    stop_pid "$pid" docker-registry "private registry" 10
    say "private registry stopped (pid $pid)"
  fi
  rm -f "$AUTH_REGISTRY_PIDFILE"
  pid=$(pidfile_pid "$REGISTRY_PIDFILE")
  if pid_is "$pid" docker-registry; then
    stop_pid "$pid" docker-registry registry 10
    say "registry stopped (pid $pid)"
  else
    say "registry not running (no live pid in $REGISTRY_PIDFILE)"
  fi
  rm -f "$REGISTRY_PIDFILE"
  pid=$(pidfile_pid "$DOCKERD_PIDFILE")
  if pid_is "$pid" dockerd; then
    stop_pid "$pid" dockerd dockerd 30
    say "dockerd stopped (pid $pid)"
  else
    say "dockerd not started by testbed (no live pid in $DOCKERD_PIDFILE); left alone"
  fi
  rm -f "$DOCKERD_PIDFILE"
}

cmd_status() {
  local rc=0 pid
  if daemon_answers; then
    pick_docker_cli
    pid=$(pidfile_pid "$DOCKERD_PIDFILE")
    say "docker daemon answers on $DOCKER_SOCK"
  else
    say "docker daemon NOT answering on $DOCKER_SOCK"
    rc=1
  fi
  if registry_answers; then
    say "registry answers on $REGISTRY_URL"
  else
    say "registry NOT answering on $REGISTRY_URL"
    rc=1
  fi
  if [[ -n $DOCKER_CLI ]]; then
    summary
  else
    say "users:    $(users_line)"
  fi
  return "$rc"
}

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=up rebuild=0 arg
  for arg in "$@"; do
    case $arg in
      up | down | status | debian-image) cmd=$arg ;;
      --rebuild) rebuild=1 ;;
      -h | --help | help) usage; return 0 ;;
      *) usage >&2; die "unknown argument: $arg" ;;
    esac
  done
  if [[ $cmd != status && -z ${TESTBED_LOCKED:-} ]]; then
    need_root "$cmd"
    make_dirs
    run_locked "$@"
    return
  fi
  case $cmd in
    up) cmd_up "$rebuild" ;;
    down) cmd_down ;;
    debian-image) cmd_debian_image "$rebuild" ;;
    status) cmd_status ;;
  esac
}

main "$@"
