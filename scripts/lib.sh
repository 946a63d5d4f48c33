# Helpers shared by scripts/testbed.sh and scripts/slurm-testbed.sh. Source it after setting
# LIB_NAME (the prefix of every message), APT_LOG and POLICY_RC_D.
# shellcheck shell=bash

for _d in /usr/sbin /sbin /usr/bin /bin; do
  case ":$PATH:" in *":$_d:"*) ;; *) PATH=$PATH:$_d ;; esac
done
export PATH

APT_UPDATED=0
CLEANUP_PATHS=()

say() { printf '%s: %s\n' "$LIB_NAME" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$LIB_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$LIB_NAME" "$*" >&2; exit 1; }

cleanup() {
  local p
  for p in "${CLEANUP_PATHS[@]}"; do rm -rf -- "$p"; done
}
trap cleanup EXIT

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0 $*)"; }

# tail_log FILE [OFFSET]: last lines of FILE (from byte OFFSET on) to stderr.
tail_log() {
  local file=$1 offset=${2:-0}
  [[ -f $file ]] || return 0
  printf '%s: --- last lines of %s ---\n' "$LIB_NAME" "$file" >&2
  tail -c +"$((offset + 1))" "$file" | tail -n 25 | sed 's/^/    /' >&2
}

# run_logged LOG CMD...: run CMD with output appended to LOG; on failure show the log tail and die.
run_logged() {
  local log=$1; shift
  printf '=== %s $ %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    tail_log "$log"
    die "command failed: $* (full output in $log)"
  fi
}

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# ------------------------------------------------------------------ processes --
# Daemons do not survive a session: pid files and sockets outlive them, and a pid may since have
# gone to another process. Every pid read from a file is checked against the expected name.

# pidfile_pid FILE: the pid in FILE, or nothing.
pidfile_pid() {
  local pid=""
  if [[ -r $1 ]]; then read -r pid <"$1" 2>/dev/null || true; fi
  [[ $pid =~ ^[0-9]+$ ]] && printf '%s' "$pid"
  return 0
}

# pid_is PID COMM: PID is a live (non-zombie) process whose name is COMM.
pid_is() {
  local pid=$1 comm=$2 stat name
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  name=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != [ZX] && $name == "$comm" ]]
}

# stop_pid PID COMM WHAT SECONDS: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid=$1 comm=$2 what=$3 wait=$4 i
  pid_is "$pid" "$comm" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < wait * 5; i++)); do
    pid_is "$pid" "$comm" || return 0
    sleep 0.2
  done
  warn "$what (pid $pid) ignored SIGTERM for ${wait}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 25; i++)); do
    pid_is "$pid" "$comm" || return 0
    sleep 0.2
  done
  die "$what (pid $pid) does not die"
}

# ------------------------------------------------------------------- packages --
pkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# ensure_packages PKG...: installs the missing ones from Debian.
ensure_packages() {
  local p missing=() made_policy=0
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  if ((${#missing[@]} == 0)); then
    say "packages present: $*"
    return 0
  fi
  say "installing packages: ${missing[*]} (log: $APT_LOG)"
  if ((APT_UPDATED == 0)); then
    run_logged "$APT_LOG" apt-get update
    APT_UPDATED=1
  fi
  # These scripts start the daemons themselves; keep postinst scripts from doing it.
  if [[ ! -e $POLICY_RC_D ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC_D"
    chmod 0755 "$POLICY_RC_D"
    CLEANUP_PATHS+=("$POLICY_RC_D")
    made_policy=1
  fi
  run_logged "$APT_LOG" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
  if ((made_policy)); then rm -f "$POLICY_RC_D"; fi
  say "installed: ${missing[*]}"
}
