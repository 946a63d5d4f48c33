#!/usr/bin/env bash
# The authorization plugin's test bed: a second dockerd, of its own, in front of which
# `jobdock authz` runs (tests/authz.rs). The node's dockerd, its docker0 and its iptables rules
# are not touched: this daemon has its own data root, exec root, socket, pid file and bridge
# (jdauthz0; never --bridge=none, which deletes docker0), and no iptables rules.
#
#   scripts/authz-testbed.sh up [PLUGIN]     bring it up (idempotent): bridge, TLS certificates,
#                                            the plugin (PLUGIN: the jobdock binary to serve it,
#                                            default target/release/jobdock), dockerd, test image
#   scripts/authz-testbed.sh plugin PLUGIN   (re)start the plugin from PLUGIN (tests/authz.rs
#                                            does, with the binary under test)
#   scripts/authz-testbed.sh down            stop dockerd and the plugin, remove the bridge
#   scripts/authz-testbed.sh status          report; exit 1 if something is down
#
# Needs root and scripts/testbed.sh up (the docker CLI, the local registry it pulls the test
# image from, the test users). Daemons do not survive a session: stale pid files and sockets
# are recognised and replaced.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=jobdock-authz-test                       # the plugin's name, as dockerd knows it
ETC=/etc/$NAME
RUN=/run/$NAME
STATE=/var/lib/$NAME
LOG_DIR=/var/log/jobdock-testbed
APT_LOG=$LOG_DIR/apt.log
POLICY_RC_D=/usr/sbin/policy-rc.d
LOCK=$RUN/lock

SOCK=$RUN/docker.sock                         # the second dockerd's API socket
TCP_ADDR=127.0.0.1:23760                      # its TLS listener (per-user mode)
DOCKERD_BIN=/usr/sbin/dockerd
DOCKERD_PIDFILE=$RUN/docker.pid               # written by dockerd (--pidfile)
DOCKERD_SSD_PIDFILE=$RUN/dockerd.pid          # written by start-stop-daemon
DOCKERD_LOG=$LOG_DIR/authz-dockerd.log
DOCKERD_WAIT=${TESTBED_DOCKERD_WAIT:-60}
DATA_ROOT=$STATE/docker
EXEC_ROOT=$RUN/exec
DAEMON_JSON=$ETC/daemon.json

BRIDGE=jdauthz0
BRIDGE_ADDR=10.213.0.1/24

PLUGIN_SOCK=/run/docker/plugins/$NAME.sock    # where dockerd finds plugin $NAME
PLUGIN_PIDFILE=$RUN/plugin.pid
PLUGIN_LOG=$LOG_DIR/authz-plugin.log          # every denial, one line each
CONFIG=$ETC/wrapper.toml                      # the plugin's site config, and the tests' jobs'
JOB_STATE=$RUN/state                          # engine.state_dir of that config
TLS=$ETC/tls

IMAGE=127.0.0.1:5000/jobdock-test/busybox:latest   # pushed by scripts/testbed.sh
TEST_USERS=(jdalice jdbob)

LIB_NAME=authz-testbed
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

dk() { docker -H "unix://$SOCK" "$@"; }

answers() {
  [[ -S $SOCK ]] && [[ $(curl -fsS --max-time 20 --unix-socket "$SOCK" http://localhost/_ping 2>/dev/null) == OK ]]
}

plugin_answers() {
  [[ -S $PLUGIN_SOCK ]] && curl -fsS --max-time 2 --unix-socket "$PLUGIN_SOCK" \
    -X POST http://plugin/Plugin.Activate 2>/dev/null | grep -q '"authz"'
}

# ------------------------------------------------------------------- bridge --
ensure_bridge() {
  if [[ ! -e /sys/class/net/$BRIDGE ]]; then
    ip link add "$BRIDGE" type bridge
    say "bridge $BRIDGE created"
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_ADDR" || ip addr add "$BRIDGE_ADDR" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  say "bridge $BRIDGE ($BRIDGE_ADDR)"
}

# -------------------------------------------------------------------- files --
ensure_files() {
  install -d -m 0755 "$ETC" "$STATE" "$LOG_DIR"
  install -d -m 0700 "$RUN" "$JOB_STATE"
  install -d -m 0700 /run/docker/plugins
  if [[ ! -e $TLS/ca.pem ]]; then
    rm -rf "$TLS"
    bash "$REPO/contrib/authz/make-certs.sh" ca "$TLS" >/dev/null
    bash "$REPO/contrib/authz/make-certs.sh" server "$TLS" localhost 127.0.0.1 >/dev/null
  fi
  local u
  for u in "${TEST_USERS[@]}"; do
    id -u "$u" >/dev/null 2>&1 || die "test user $u missing: run scripts/testbed.sh up first"
    [[ -e $TLS/users/$u/cert.pem ]] || bash "$REPO/contrib/authz/make-certs.sh" user "$TLS" "$u" >/dev/null
  done
  say "TLS: CA and server certificate in $TLS, client certificates for ${TEST_USERS[*]}"
  cat >"$CONFIG.new" <<EOF
# The site config of the authorization test bed (scripts/authz-testbed.sh): the plugin's policy,
# and the config tests/authz.rs runs its jobs with.
[engine]
socket = "$SOCK"
state_dir = "$JOB_STATE"
connect_timeout_secs = 30
grace_period_secs = 3

[network]
default = "none"

[authz]
tls_users = true
EOF
  chmod 0644 "$CONFIG.new"
  mv -f "$CONFIG.new" "$CONFIG"
  # The plugin by daemon.json (not --authorization-plugin), so the break-glass works here as on a
  # node: remove it from the file and SIGHUP dockerd.
  cat >"$DAEMON_JSON.new" <<EOF
{
  "authorization-plugins": ["$NAME"]
}
EOF
  mv -f "$DAEMON_JSON.new" "$DAEMON_JSON"
}

# ------------------------------------------------------------------- plugin --
stop_plugin() {
  local pid
  pid=$(pidfile_pid "$PLUGIN_PIDFILE")
  if pid_is "$pid" jobdock; then
    stop_pid "$pid" jobdock plugin 10
    say "plugin stopped (pid $pid)"
  fi
  rm -f "$PLUGIN_PIDFILE"
}

# start_plugin BIN: serves $PLUGIN_SOCK from BIN (the plugin replaces a stale socket itself).
start_plugin() {
  local bin=$1 i
  [[ -x $bin ]] || die "plugin binary $bin missing (cargo build --release)"
  stop_plugin
  printf '=== %s authz-testbed: starting %s authz\n' "$(date -u +%FT%TZ)" "$bin" >>"$PLUGIN_LOG"
  start-stop-daemon --start --background --no-close --make-pidfile --pidfile "$PLUGIN_PIDFILE" \
    --startas "$bin" -- --log-level "${AUTHZ_PLUGIN_LOG_LEVEL:-info}" authz --config "$CONFIG" --listen "$PLUGIN_SOCK" \
    </dev/null >>"$PLUGIN_LOG" 2>&1 || die "start-stop-daemon could not start $bin"
  for ((i = 0; i < 50; i++)); do
    plugin_answers && { say "plugin serving $PLUGIN_SOCK (pid $(pidfile_pid "$PLUGIN_PIDFILE"), $bin)"; return 0; }
    sleep 0.1
  done
  tail_log "$PLUGIN_LOG"
  die "the plugin did not answer on $PLUGIN_SOCK"
}

ensure_plugin() {
  local bin=$1 pid
  pid=$(pidfile_pid "$PLUGIN_PIDFILE")
  if pid_is "$pid" jobdock && plugin_answers && [[ $(readlink -f "/proc/$pid/exe") == "$(readlink -f "$bin")" ]]; then
    say "plugin already serving $PLUGIN_SOCK (pid $pid)"
    return 0
  fi
  start_plugin "$bin"
}

# ------------------------------------------------------------------ dockerd --
clean_stale() {
  local pid f removed=()
  for f in "$DOCKERD_PIDFILE" "$DOCKERD_SSD_PIDFILE"; do
    pid=$(pidfile_pid "$f")
    if [[ -e $f ]] && ! pid_is "$pid" dockerd; then rm -f "$f"; removed+=("$f"); fi
  done
  if [[ -e $SOCK ]]; then rm -f "$SOCK"; removed+=("$SOCK"); fi
  # Its own containerd (under the exec root): dockerd adopts a live one, not a dead one's files.
  pid=$(pidfile_pid "$EXEC_ROOT/containerd/containerd.pid")
  if ! pid_is "$pid" containerd; then
    for f in "$EXEC_ROOT/containerd/containerd.pid" "$EXEC_ROOT/containerd/containerd.sock" \
      "$EXEC_ROOT/containerd/containerd.sock.ttrpc" "$EXEC_ROOT/containerd/containerd-debug.sock"; do
      if [[ -e $f ]]; then rm -f "$f"; removed+=("$f"); fi
    done
  fi
  if ((${#removed[@]})); then say "removed stale files: ${removed[*]}"; fi
}

ensure_dockerd() {
  local pid offset i
  if answers; then
    say "second dockerd answers on $SOCK (pid $(pidfile_pid "$DOCKERD_PIDFILE"))"
    return 0
  fi
  pid=$(pidfile_pid "$DOCKERD_SSD_PIDFILE")
  if pid_is "$pid" dockerd; then
    say "second dockerd (pid $pid) does not answer; restarting it"
    stop_pid "$pid" dockerd dockerd 30
  fi
  clean_stale
  offset=$(file_size "$DOCKERD_LOG")
  local args=(
    --config-file "$DAEMON_JSON"
    --data-root "$DATA_ROOT"
    --exec-root "$EXEC_ROOT"
    --pidfile "$DOCKERD_PIDFILE"
    -H "unix://$SOCK"
    -H "tcp://$TCP_ADDR" --tlsverify --tlscacert "$TLS/ca.pem"
    --tlscert "$TLS/server-cert.pem" --tlskey "$TLS/server-key.pem"
    --bridge "$BRIDGE" --iptables=false --ip-masq=false
    --storage-driver overlay2
  )
  printf '=== %s authz-testbed: starting %s %s\n' "$(date -u +%FT%TZ)" "$DOCKERD_BIN" "${args[*]}" >>"$DOCKERD_LOG"
  start-stop-daemon --start --background --no-close --make-pidfile --pidfile "$DOCKERD_SSD_PIDFILE" \
    --startas "$DOCKERD_BIN" -- "${args[@]}" </dev/null >>"$DOCKERD_LOG" 2>&1 \
    || die "start-stop-daemon could not start $DOCKERD_BIN"
  for ((i = 0; i < DOCKERD_WAIT * 2; i++)); do
    answers && break
    pid=$(pidfile_pid "$DOCKERD_SSD_PIDFILE")
    if ! pid_is "$pid" dockerd; then
      tail_log "$DOCKERD_LOG" "$offset"
      die "the second dockerd exited during startup (log: $DOCKERD_LOG)"
    fi
    sleep 0.5
  done
  answers || { tail_log "$DOCKERD_LOG" "$offset"; die "the second dockerd did not answer on $SOCK"; }
  [[ -e /sys/class/net/docker0 ]] || warn "docker0 is missing (it was before? not this daemon's doing: it has $BRIDGE)"
  say "second dockerd started (pid $(pidfile_pid "$DOCKERD_PIDFILE"), $SOCK and tcp://$TCP_ADDR, log $DOCKERD_LOG)"
}

# A pull, through the plugin (`docker load` is refused by its policy: loading images is not a
# jobdock action).
ensure_image() {
  if dk image inspect "$IMAGE" >/dev/null 2>&1; then
    say "image $IMAGE present"
    return 0
  fi
  run_logged "$DOCKERD_LOG" dk pull "$IMAGE"
  say "image $IMAGE pulled from the local registry"
}

# ------------------------------------------------------------------ commands --
default_plugin() {
  local b
  for b in "$REPO/target/release/jobdock" "$REPO/target/debug/jobdock"; do
    [[ -x $b ]] && { printf '%s' "$b"; return 0; }
  done
  die "no jobdock binary in $REPO/target: cargo build --release first"
}

cmd_up() {
  local bin=${1:-$(default_plugin)}
  command -v docker >/dev/null || die "no docker CLI: run scripts/testbed.sh up first"
  ensure_bridge
  ensure_files
  ensure_plugin "$(readlink -f "$bin")"
  ensure_dockerd
  ensure_image
  say "ready: DOCKER_HOST=unix://$SOCK, plugin $NAME, config $CONFIG, denials in $PLUGIN_LOG"
}

cmd_down() {
  local pid
  pid=$(pidfile_pid "$DOCKERD_SSD_PIDFILE")
  if pid_is "$pid" dockerd; then
    stop_pid "$pid" dockerd dockerd 30
    say "second dockerd stopped (pid $pid)"
  fi
  rm -f "$DOCKERD_SSD_PIDFILE"
  stop_plugin
  if [[ -e /sys/class/net/$BRIDGE ]]; then
    ip link del "$BRIDGE"
    say "bridge $BRIDGE removed"
  fi
}

cmd_status() {
  local rc=0
  if plugin_answers; then say "plugin answers on $PLUGIN_SOCK"; else say "plugin NOT answering on $PLUGIN_SOCK"; rc=1; fi
  if answers; then say "second dockerd answers on $SOCK"; else say "second dockerd NOT answering on $SOCK"; rc=1; fi
  return "$rc"
}

main() {
  local cmd=${1:-up}
  [[ $cmd == status ]] && { cmd_status; return; }
  need_root "$cmd"
  install -d -m 0700 "$RUN"
  if [[ -z ${AUTHZ_TESTBED_LOCKED:-} ]]; then
    export AUTHZ_TESTBED_LOCKED=1
    exec flock -w 300 -o "$LOCK" "$BASH" "${BASH_SOURCE[0]}" "$@"
  fi
  case $cmd in
    up) cmd_up "${2:-}" ;;
    plugin) [[ -n ${2:-} ]] || die "plugin: give the jobdock binary"; ensure_files; start_plugin "$(readlink -f "$2")" ;;
    down) cmd_down ;;
    -h | --help | help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command: $cmd" ;;
  esac
}

main "$@"
