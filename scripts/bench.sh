#!/usr/bin/env bash
# jobdock benchmark suite (BENCHMARKS.md explains every figure and target).
#
#   scripts/bench.sh [SECTION...]    sections: start output lines lines-cat registry plan
#                                    (default: all)
#   BENCH_RUNS=N                     rounds (default 5; start: BENCH_START_RUNS, default 4N)
#   BENCH_OTHER=PATH                 also run another jobdock binary (variant "other") in start,
#                                    output and lines: a before/after comparison in one run
#   BENCH_OTHER_OUTPUT=fifo          run "other" with engine.output = "fifo" (default: attach)
#
# As root, after `scripts/testbed.sh up`. Builds the release binary and examples/engine_floor,
# then measures side by side, interleaved (the order rotates every round), BENCH_RUNS rounds
# (default 5), and prints min / median / max of each and every target as a ratio. Jobs run as
# jdalice with network "none" from a root-owned config in $BENCH_DIR. Output is checked byte-exact
# with cksum (CRC-32 and length) of what the consumer received; sha256sum reads only ~185 MB/s
# here, slower than the pipe being measured. Results also go to $BENCH_DIR/results.txt.
set -euo pipefail

BENCH_RUNS=${BENCH_RUNS:-5}
START_RUNS=${BENCH_START_RUNS:-$((BENCH_RUNS * 4))}   # start is cheap and noisy: more rounds
BENCH_DIR=/var/lib/jobdock-bench
CONFIG=$BENCH_DIR/wrapper.toml
STATE=$BENCH_DIR/state
STAGING=$BENCH_DIR/staging          # passwd/group for the docker run and engine floor variants
WORK=$BENCH_DIR/work                # the jobs' working directory (mounted into them)
PATTERN=$WORK/pattern.txt           # 1 GiB of text: base64 of random bytes, 77-byte lines
PATTERN_BYTES=1073741824
LINES=1000000
LINES_FILE=$WORK/lines.txt          # the same million lines, for a producer that costs nothing
FIFO=$BENCH_DIR/fifo-out            # the bind-mounted FIFO prototype
RESULTS=$BENCH_DIR/results.txt

USER_NAME=jdalice
IMAGE=jobdock-test/busybox:latest
REGISTRY=127.0.0.1:5000
REGISTRY_LOG=/var/log/jobdock-testbed/registry.log
REMOTE_REPO=jobdock-bench/busybox   # a repository of the bench's own: its log lines are ours
REMOTE=$REGISTRY/$REMOTE_REPO:latest
BURST=16

MANY_USER=jdmany                    # a user in MANY_GROUPS supplementary groups
MANY_UID=2600
MANY_GROUPS=500
MANY_GID0=5000                      # groups jdmany001.. get gids 5001..

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
JOBDOCK=$TARGET/release/jobdock
FLOOR=$TARGET/release/examples/engine_floor
JOB_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }

# ------------------------------------------------------------------ setup --
[[ $(id -u) -eq 0 ]] || die "must run as root"
for c in /usr/bin/docker /usr/local/bin/docker; do
  if [[ -x $c ]] && "$c" version >/dev/null 2>&1; then DOCKER=$c; break; fi
done
[[ -n ${DOCKER:-} ]] || die "no docker client answers: run scripts/testbed.sh up"
"$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE missing: run scripts/testbed.sh up"
curl -fsS -A jobdock-testbed -o /dev/null "http://$REGISTRY/v2/" || die "no registry at $REGISTRY"
for tool in jq strace cksum /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install jq strace time)"
done

say "building (cargo build --release --bin jobdock --example engine_floor)"
(cd "$ROOT" && cargo build --quiet --release --bin jobdock --example engine_floor)

install -d -m 0755 -o root -g root "$BENCH_DIR" "$STAGING"
install -d -m 0700 -o root -g root "$STATE"
install -d -m 0755 -o "$USER_NAME" "$WORK"
cat >"$CONFIG.new" <<EOF
# Written by scripts/bench.sh.
[engine]
state_dir = "$STATE"
pull = "missing"
# "jobdock" is the attach path; "jobdock_fifo" (wrapper-fifo.toml) the default, FIFOs.
output = "attach"
# The jobs need no network; "none" keeps the bench off the node's bridge and iptables.
[network]
default = "none"
EOF
install -m 0644 -o root -g root "$CONFIG.new" "$CONFIG" && rm -f "$CONFIG.new"
# The same with the job's output through FIFOs (engine.output = "fifo").
FIFO_CONFIG=$BENCH_DIR/wrapper-fifo.toml
sed 's/^output = "attach"$/output = "fifo"/' "$CONFIG" >"$FIFO_CONFIG.new"
install -m 0644 -o root -g root "$FIFO_CONFIG.new" "$FIFO_CONFIG" && rm -f "$FIFO_CONFIG.new"

if [[ $(stat -c %s "$PATTERN" 2>/dev/null || echo 0) != "$PATTERN_BYTES" ]]; then
  say "writing $PATTERN"
  head -c $((PATTERN_BYTES * 3 / 4 + 1024)) /dev/urandom | base64 -w 76 | head -c "$PATTERN_BYTES" >"$PATTERN.new" || true
  chmod 0644 "$PATTERN.new" && mv "$PATTERN.new" "$PATTERN"
fi
WANT_BIG=$(cksum <"$PATTERN")
WANT_LINES=$(seq "$LINES" | cksum)
if [[ $(cksum 2>/dev/null <"$LINES_FILE") != "$WANT_LINES" ]]; then
  seq "$LINES" >"$LINES_FILE.new" && chmod 0644 "$LINES_FILE.new" && mv "$LINES_FILE.new" "$LINES_FILE"
fi

# The test user in MANY_GROUPS groups (idempotent: only what is missing is added).
ensure_many_groups() {
  local i name missing=() have
  for ((i = 1; i <= MANY_GROUPS; i++)); do
    printf -v name 'jdmany%03d' "$i"
    getent group "$name" >/dev/null || groupadd -g $((MANY_GID0 + i)) "$name"
    missing+=("$name")
  done
  getent passwd "$MANY_USER" >/dev/null \
    || useradd -u "$MANY_UID" -U -d "/home/$MANY_USER" -m -s /bin/sh "$MANY_USER"
  have=$(id -G "$MANY_USER" | wc -w)
  if ((have < MANY_GROUPS + 1)); then
    usermod -a -G "$(IFS=,; echo "${missing[*]}")" "$MANY_USER"
  fi
}

# jd ARGS...: jobdock as a scheduler hook runs it, from the job's directory, with a clean env.
# Client processes run under /usr/bin/time when RSS_FILE is set: their peak RSS lands there.
timed() { if [[ -n ${RSS_FILE:-} ]]; then /usr/bin/time -f %M -o "$RSS_FILE" "$@"; else "$@"; fi; }
jd() { (cd "$WORK" && timed env -i PATH="$JOB_PATH" HOME=/root "$JOBDOCK" "$@"); }
jd_run() { jd run --config "$CONFIG" --user "$USER_NAME" --image "$IMAGE" -- "$@"; }
jd_fifo() { jd run --config "$FIFO_CONFIG" --user "$USER_NAME" --image "$IMAGE" -- "$@"; }
if [[ ${BENCH_OTHER_OUTPUT:-attach} == fifo ]]; then
  jd_other() { JOBDOCK=$BENCH_OTHER jd_fifo "$@"; }
else
  jd_other() { JOBDOCK=$BENCH_OTHER jd_run "$@"; }
fi
OTHER=()   # the "other" variant, when BENCH_OTHER names a binary
if [[ -n ${BENCH_OTHER:-} ]]; then OTHER=(other); fi

# The docker run flags of jobdock's own plan (`jobdock plan`), with the staging files of the
# bench, no --name and --rm: the same container, made by the docker CLI.
say "deriving docker run flags from jobdock plan"
plan_json=$(jd plan --json --config "$CONFIG" --user "$USER_NAME" --image "$IMAGE" -- true)
jq -r .passwd <<<"$plan_json" >"$STAGING/passwd"
jq -r .group <<<"$plan_json" >"$STAGING/group"
chmod 0644 "$STAGING/passwd" "$STAGING/group"
DOCKER_FLAGS=(--rm)
while IFS= read -r line; do
  [[ $line == 'docker run'* ]] && continue
  line=${line%%  # *}
  line=$(sed -E "s#$STATE/[^/]+/#$STAGING/#g" <<<"$line")
  eval "words=($line)"
  [[ ${words[0]} == --name ]] && continue
  [[ ${words[0]} == "$IMAGE" ]] && break
  DOCKER_FLAGS+=("${words[@]}")
done < <(jd plan --config "$CONFIG" --user "$USER_NAME" --image "$IMAGE" -- true)
DOCKER_FLAGS_LOGGED=()
for ((i = 0; i < ${#DOCKER_FLAGS[@]}; i++)); do
  if [[ ${DOCKER_FLAGS[i]} == --log-driver ]]; then ((i += 1)); continue; fi
  DOCKER_FLAGS_LOGGED+=("${DOCKER_FLAGS[i]}")
done
# The engine floor creates the container from the same create body, with the directories
# themselves as sources where jobdock mounts them through its pinned copies in $STATE/mounts
# (the home and working directory are mounted at their own paths).
jq --arg pins "$STATE/mounts/" '.create.HostConfig.Mounts |= map(
    if (.Source | startswith($pins)) then .Source = .Target else . end)' <<<"$plan_json" \
  | sed -E "s#$STATE/[^/]+/#$STAGING/#g" >"$BENCH_DIR/plan.json"

dk_run() { (cd "$WORK" && timed "$DOCKER" run "${DOCKER_FLAGS[@]}" "$IMAGE" "$@"); }
dk_run_logged() { (cd "$WORK" && timed "$DOCKER" run "${DOCKER_FLAGS_LOGGED[@]}" "$IMAGE" "$@"); }
floor() {
  (cd "$WORK" && timed "$FLOOR" "$BENCH_DIR/plan.json" "jobdock-bench-floor-$BASHPID" "$@")
}
host() { (cd "$WORK" && "$@"); }
# The fast path's prototype: the job's stdout is a FIFO the caller owns, bind-mounted into the
# container (by the docker CLI here; jobdock would do the same through the API).
fifo() {
  rm -f "$FIFO"
  mkfifo -m 0600 "$FIFO" && chown "$USER_NAME" "$FIFO"
  (cd "$WORK" && "$DOCKER" run "${DOCKER_FLAGS[@]}" \
    --mount "type=bind,source=$FIFO,target=/dev/jobdock/stdout" \
    "$IMAGE" sh -c 'exec "$@" >/dev/jobdock/stdout' sh "$@" </dev/null >/dev/null) &
  cat <"$FIFO"
  wait $!
}

# ------------------------------------------------------------- measuring --
declare -A T=()     # "section.variant" -> seconds, space-separated, one per round
declare -A RSS=()   # "section.variant" -> peak RSS of the client process in KiB
declare -A BAD=()   # "section.variant" -> count of runs with wrong bytes or a failed job

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }

# measure KEY WANT CMD...: times `CMD </dev/null | cksum`, checks the sum against WANT (if set)
# and records the peak RSS of the client process (jobdock, docker, engine_floor) CMD runs.
measure() {
  local key=$1 want=$2 t0 t1 got rc=0 rss
  shift 2
  export RSS_FILE
  RSS_FILE=$(mktemp)
  t0=$(now)
  got=$("$@" </dev/null | cksum) || rc=$?
  t1=$(now)
  rss=$(tail -n1 "$RSS_FILE")
  rm -f "$RSS_FILE"
  RSS_FILE=
  T[$key]+=" $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')"
  RSS[$key]+=" $rss"
  if [[ -n $want && $got != "$want" ]] || ((rc != 0)); then
    BAD[$key]=$((${BAD[$key]:-0} + 1))
    say "$key: got '${got}' (rc $rc), want '$want'"
  fi
}

# stats KEY: "min median max" of T[KEY].
stats() {
  tr ' ' '\n' <<<"${T[$1]:-}" | { grep . || true; } | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- - -"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.3f %.3f %.3f\n", v[1], m, v[NR] }'
}
median() { stats "$1" | cut -d' ' -f2; }
max_rss() { tr ' ' '\n' <<<"${RSS[$1]:-}" | { grep . || true; } | sort -n | tail -n1; }

# rounds SECTION WANT VARIANT... : BENCH_RUNS rounds, each variant once a round, order rotated.
rounds() {
  local section=$1 want=$2 r i n
  shift 2
  local variants=("$@")
  n=${#variants[@]}
  for ((r = 0; r < BENCH_RUNS; r++)); do
    for ((i = 0; i < n; i++)); do
      local v=${variants[(i + r) % n]}
      measure "$section.${v%%:*}" "$want" ${v#*:}
    done
    say "$section: round $((r + 1))/$BENCH_RUNS done"
  done
}

row() { # row SECTION VARIANT [MiB]
  local key=$1.$2 s rss mbs=""
  s=$(stats "$key")
  rss=$(max_rss "$key")
  if [[ -n ${3:-} ]]; then
    mbs=$(awk -v m="$(median "$key")" -v b="$3" 'BEGIN { printf "%.0f MB/s", b / m / 1e6 }')
  fi
  out "$(printf '  %-10s %-16s min %7s  median %7s  max %7s s  %-10s peak RSS %6s KiB  bad %s' \
    "$1" "$2" $s "$mbs" "${rss:--}" "${BAD[$key]:-0}")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
verdict() { awk -v x="$1" -v op="$2" -v y="$3" 'BEGIN {
  ok = (op == "<=") ? x <= y : (op == ">=") ? x >= y : (op == "<") ? x < y : (op == "==") ? x == y : 0
  print ok ? "MET" : "NOT MET" }'; }
target() { # target TEXT VALUE OP LIMIT
  out "$(printf '  %-58s %8s  (target %s %s)  %s' "$1" "$2" "$3" "$4" "$(verdict "$2" "$3" "$4")")"
}

SECTIONS=("$@")
((${#SECTIONS[@]})) || SECTIONS=(start output lines lines-cat registry plan)
want() { [[ " ${SECTIONS[*]} " == *" $1 "* ]]; }

: >"$RESULTS"
out "jobdock bench $(date -u +%FT%TZ) on $(hostname): $(nproc) cores, $(uname -r)"
if rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  git -C "$ROOT" diff --quiet || rev+="+dirty"
else
  rev=${BENCH_REV:-"? (not a git tree)"}
fi
out "  dockerd $("$DOCKER" version -f '{{.Server.Version}}'), client $DOCKER $("$DOCKER" version -f '{{.Client.Version}}'), jobdock $rev${BENCH_OTHER:+, other: $BENCH_OTHER (output ${BENCH_OTHER_OUTPUT:-attach})}"
out "  $BENCH_RUNS rounds ($START_RUNS for start, $((BENCH_RUNS * 4)) for plan)"
out "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ start --
if want start; then
  say "start: a \`true\` job"
  measure start.warmup "" jd_run true
  BENCH_RUNS=$START_RUNS rounds start "" "jobdock:jd_run true" "jobdock_fifo:jd_fifo true" \
    "docker_run:dk_run true" "floor:floor true" ${OTHER:+"other:jd_other true"}
  out ""
  out "start overhead of a \`true\` job (wall seconds; jobdock_fifo is the default output path)"
  for v in jobdock jobdock_fifo docker_run floor "${OTHER[@]}"; do row start "$v"; done
  target "start: jobdock (fifo, the default) / engine floor" "$(ratio "$(median start.jobdock_fifo)" "$(median start.floor)")" "<=" 1.05
  target "start: jobdock (fifo, the default) / docker run" "$(ratio "$(median start.jobdock_fifo)" "$(median start.docker_run)")" "<" 1
  target "start: jobdock (attach) / engine floor" "$(ratio "$(median start.jobdock)" "$(median start.floor)")" "<=" 1.05
fi

# ----------------------------------------------------------------- output --
if want output; then
  say "output: 1 GiB on stdout"
  rounds output "$WANT_BIG" "pipe:host cat $PATTERN" "jobdock:jd_run cat $PATTERN" \
    "docker_none:dk_run cat $PATTERN" "docker_json:dk_run_logged cat $PATTERN" \
    "floor:floor cat $PATTERN" "fifo_proto:fifo cat $PATTERN" "jobdock_fifo:jd_fifo cat $PATTERN" \
    ${OTHER:+"other:jd_other cat $PATTERN"}
  out ""
  out "output: 1 GiB of text on the job's stdout, checked with cksum (wall seconds; MB/s = 1 GiB / median)"
  for v in pipe jobdock jobdock_fifo docker_none docker_json floor fifo_proto "${OTHER[@]}"; do
    row output "$v" $PATTERN_BYTES
  done
  target "output: jobdock speed / docker run (json-file)" "$(ratio "$(median output.docker_json)" "$(median output.jobdock)")" ">=" 5
  target "output: jobdock speed / plain pipe" "$(ratio "$(median output.pipe)" "$(median output.jobdock)")" ">=" 0.5
  target "output: FIFO prototype speed / plain pipe" "$(ratio "$(median output.pipe)" "$(median output.fifo_proto)")" ">=" 0.5
  target "output: jobdock (fifo) speed / plain pipe" "$(ratio "$(median output.pipe)" "$(median output.jobdock_fifo)")" ">=" 0.5
  target "output: jobdock (fifo) speed / docker run (json-file)" "$(ratio "$(median output.docker_json)" "$(median output.jobdock_fifo)")" ">=" 5
  target "output: jobdock (fifo) runs with wrong bytes" "${BAD[output.jobdock_fifo]:-0}" "==" 0
  target "peak RSS of jobdock (fifo) moving 1 GiB (MiB)" "$(awk -v k="$(max_rss output.jobdock_fifo)" 'BEGIN { printf "%.1f", k / 1024 }')" "<=" 8
  target "output: jobdock runs with wrong bytes" "${BAD[output.jobdock]:-0}" "==" 0
  target "peak RSS of jobdock moving 1 GiB (MiB)" "$(awk -v k="$(max_rss output.jobdock)" 'BEGIN { printf "%.1f", k / 1024 }')" "<=" 8
fi

if want lines; then
  say "lines: $LINES short lines"
  rounds lines "$WANT_LINES" "pipe:host seq $LINES" "jobdock:jd_run seq $LINES" \
    "docker_none:dk_run seq $LINES" "docker_json:dk_run_logged seq $LINES" "floor:floor seq $LINES" \
    "fifo_proto:fifo seq $LINES" "jobdock_fifo:jd_fifo seq $LINES" ${OTHER:+"other:jd_other seq $LINES"}
  out ""
  out "lines: seq $LINES (6.9 MB) on the job's stdout, checked with cksum (wall seconds)"
  for v in pipe jobdock jobdock_fifo docker_none docker_json floor fifo_proto "${OTHER[@]}"; do row lines "$v"; done
  target "lines: jobdock speed / docker run (json-file)" "$(ratio "$(median lines.docker_json)" "$(median lines.jobdock)")" ">=" 5
  target "lines: jobdock speed / plain pipe (wall, start included)" "$(ratio "$(median lines.pipe)" "$(median lines.jobdock)")" ">=" 0.5
  target "lines: FIFO prototype speed / docker run (json-file)" "$(ratio "$(median lines.docker_json)" "$(median lines.fifo_proto)")" ">=" 5
  target "lines: jobdock (fifo) speed / docker run (json-file)" "$(ratio "$(median lines.docker_json)" "$(median lines.jobdock_fifo)")" ">=" 5
  target "lines: jobdock (fifo) runs with wrong bytes" "${BAD[lines.jobdock_fifo]:-0}" "==" 0
  target "lines: jobdock runs with wrong bytes" "${BAD[lines.jobdock]:-0}" "==" 0
fi

# The same million lines from a file: busybox `seq` takes 0.36 s of CPU or more for them, which
# bounds every variant of "lines" but the host pipe; `cat` writes them in big blocks.
if want lines-cat; then
  say "lines-cat: $LINES short lines, cat from a file"
  rounds lines-cat "$WANT_LINES" "pipe:host cat $LINES_FILE" "jobdock:jd_run cat $LINES_FILE" \
    "docker_none:dk_run cat $LINES_FILE" "docker_json:dk_run_logged cat $LINES_FILE" \
    "floor:floor cat $LINES_FILE" "fifo_proto:fifo cat $LINES_FILE" \
    "jobdock_fifo:jd_fifo cat $LINES_FILE" ${OTHER:+"other:jd_other cat $LINES_FILE"}
  out ""
  out "lines-cat: cat of a file of seq $LINES (6.9 MB) on the job's stdout, checked with cksum (wall seconds)"
  for v in pipe jobdock jobdock_fifo docker_none docker_json floor fifo_proto "${OTHER[@]}"; do row lines-cat "$v"; done
  target "lines-cat: jobdock speed / docker run (json-file)" "$(ratio "$(median lines-cat.docker_json)" "$(median lines-cat.jobdock)")" ">=" 5
  target "lines-cat: FIFO prototype speed / docker run (json-file)" "$(ratio "$(median lines-cat.docker_json)" "$(median lines-cat.fifo_proto)")" ">=" 5
  target "lines-cat: jobdock (fifo) speed / docker run (json-file)" "$(ratio "$(median lines-cat.docker_json)" "$(median lines-cat.jobdock_fifo)")" ">=" 5
  target "lines-cat: jobdock (fifo) runs with wrong bytes" "${BAD[lines-cat.jobdock_fifo]:-0}" "==" 0
fi

# --------------------------------------------------------------- registry --
registry_lines() { tail -n +"$(($1 + 1))" "$REGISTRY_LOG" | grep -v '"jobdock-testbed"' || true; }
if want registry; then
  PULLS=""
  say "registry: pushing $REMOTE for the bench's own repository"
  "$DOCKER" tag "$IMAGE" "$REMOTE"
  "$DOCKER" push "$REMOTE" >/dev/null
  jd_remote() { jd run --config "$CONFIG" --user "$USER_NAME" --image "$REMOTE" -- true; }
  start_line=$(wc -l <"$REGISTRY_LOG")
  for ((r = 0; r < BENCH_RUNS; r++)); do jd_remote </dev/null; done
  sleep 1
  warm=$(registry_lines "$start_line" | grep -c "/v2/$REMOTE_REPO/" || true)
  other=$(registry_lines "$start_line" | grep -vc "/v2/$REMOTE_REPO/" || true)
  out ""
  out "registry: $BENCH_RUNS warm starts of $REMOTE (pull \"missing\"): $warm requests for $REMOTE_REPO ($other other non-testbed lines in the window, e.g. other sessions' tests)"
  target "registry requests per warm start" "$(ratio "$warm" "$BENCH_RUNS")" "==" 0

  for ((r = 0; r < BENCH_RUNS; r++)); do
    "$DOCKER" rmi "$REMOTE" >/dev/null
    start_line=$(wc -l <"$REGISTRY_LOG")
    t0=$(now)
    pids=()
    for ((j = 0; j < BURST; j++)); do jd_remote </dev/null & pids+=($!); done
    fails=0
    for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
    t1=$(now)
    sleep 1
    T[burst.jobdock]+=" $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')"
    # A pull asks for the tag's manifest (HEAD, or GET), then GETs what it lacks by digest.
    pulls=$(registry_lines "$start_line" | grep -cE "\"(GET|HEAD) /v2/$REMOTE_REPO/manifests/latest " || true)
    by_digest=$(registry_lines "$start_line" | grep -c "\"GET /v2/$REMOTE_REPO/manifests/sha256:" || true)
    PULLS+=" $pulls"
    out "  burst round $((r + 1)): $BURST jobs, $fails failed, pulls (tag manifest requests) $pulls, manifest GETs by digest $by_digest"
    ((fails == 0)) || BAD[burst.jobdock]=$((${BAD[burst.jobdock]:-0} + fails))
  done
  out "registry: $BURST jobs at once, image absent (makespan, wall seconds)"
  row burst jobdock
  target "burst: most pulls in one burst" "$(tr ' ' '\n' <<<"$PULLS" | grep . | sort -n | tail -n1)" "==" 1
  target "burst: fewest pulls in one burst" "$(tr ' ' '\n' <<<"$PULLS" | grep . | sort -n | head -n1)" "==" 1

  # Per-job requests by kind, for the scale estimate in BENCHMARKS.md: a cold job (image absent,
  # pull "missing"), warm jobs under "newer", and one cold job with the access cache emptied.
  kinds() { # kinds START_LINE: "COUNT METHOD PATH" for the bench's repository, digests shortened
    registry_lines "$1" | grep "/v2/$REMOTE_REPO/" \
      | sed -E 's/.*"(GET|HEAD|POST|PUT) ([^ ?]*)[^"]*" ([0-9]+).*/\1 \2 \3/; s/sha256:[0-9a-f]{64}/sha256:DIGEST/' \
      | sort | uniq -c | sed 's/^ */    /'
  }
  NEWER_CONFIG=$BENCH_DIR/wrapper-newer.toml
  sed 's/^pull = "missing"$/pull = "newer"/' "$CONFIG" >"$NEWER_CONFIG.new"
  install -m 0644 -o root -g root "$NEWER_CONFIG.new" "$NEWER_CONFIG" && rm -f "$NEWER_CONFIG.new"
  jd_newer() { jd run --config "$NEWER_CONFIG" --user "$USER_NAME" --image "$REMOTE" -- true; }
  jd_remote </dev/null
  start_line=$(wc -l <"$REGISTRY_LOG")
  for ((r = 0; r < BENCH_RUNS; r++)); do jd_newer </dev/null; done
  sleep 1
  n=$(registry_lines "$start_line" | grep -c "/v2/$REMOTE_REPO/" || true)
  out "registry: $BENCH_RUNS warm starts with pull \"newer\": $n requests for $REMOTE_REPO, by kind (count, method, path, status):"
  out "$(kinds "$start_line")"
  "$DOCKER" rmi "$REMOTE" >/dev/null
  start_line=$(wc -l <"$REGISTRY_LOG")
  jd_remote </dev/null
  sleep 1
  out "registry: one cold start (tag absent, layers present, pull \"missing\", access verdict cached), by kind:"
  out "$(kinds "$start_line")"
  "$DOCKER" rmi "$REMOTE" >/dev/null
  rm -rf "$STATE/access"
  start_line=$(wc -l <"$REGISTRY_LOG")
  jd_remote </dev/null
  sleep 1
  out "registry: one cold start as above with the access cache emptied (a node's first job of the image), by kind:"
  out "$(kinds "$start_line")"
fi

# ------------------------------------------------------------------- plan --
if want plan; then
  say "plan: a user in $MANY_GROUPS groups"
  ensure_many_groups
  jd_plan() { jd plan --config "$CONFIG" --user "$1" --image "$IMAGE" -- true >/dev/null; }
  for ((r = 0; r < BENCH_RUNS * 4; r++)); do
    t0=$(now); jd_plan "$MANY_USER"; t1=$(now)
    T[plan.many]+=" $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.5f", b - a }')"
    t0=$(now); jd_plan "$USER_NAME"; t1=$(now)
    T[plan.few]+=" $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.5f", b - a }')"
  done
  trace=$(mktemp)
  (cd "$WORK" && env -i PATH="$JOB_PATH" strace -f -qq -e trace=openat -o "$trace" \
    "$JOBDOCK" plan --config "$CONFIG" --user "$MANY_USER" --image "$IMAGE" -- true >/dev/null)
  opens=$(grep -c '"/etc/group"' "$trace" || true)
  rm -f "$trace"
  imports=$(nm -D --undefined-only "$JOBDOCK" | { grep -Ewo "getgrent|setgrent|getgrent_r|getpwent|setpwent|getpwent_r" || true; } | sort -u | tr '\n' ' ')
  out ""
  out "plan: \`jobdock plan\` for $MANY_USER ($(id -G "$MANY_USER" | wc -w) groups) and $USER_NAME ($(id -G "$USER_NAME" | wc -w) groups), $((BENCH_RUNS * 4)) rounds (wall seconds, process start included)"
  row plan many; row plan few
  out "  database enumeration functions jobdock imports (nm -D): ${imports:-none}; /etc/group opened $opens times for $MANY_USER"
  target "plan: $MANY_GROUPS groups, median milliseconds" "$(awk -v s="$(median plan.many)" 'BEGIN { printf "%.1f", s * 1000 }')" "<" 100
fi

out ""
out "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
say "results in $RESULTS"
