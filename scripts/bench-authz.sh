#!/usr/bin/env bash
# What the authorization plugin costs (BENCHMARKS.md, "The authorization plugin"):
#
#   scripts/bench-authz.sh [JOBDOCK]    JOBDOCK: the release binary (default target/release/jobdock)
#   BENCH_CALLS=N BENCH_JOBS=M          API calls per variant (default 2000), jobs per variant (20)
#
# As root, after scripts/testbed.sh up and scripts/authz-testbed.sh up. On the bed's second dockerd:
#   - the plugin alone: AuthZReq round trips on its socket (one keep-alive connection), for
#     GET /_ping and for jobdock's own create body (`jobdock plan --json`);
#   - one API call through dockerd (GET /_ping, keep-alive), with the plugin and without it;
#   - one jobdock job (`true`, as jdalice, network none), with the plugin and without it, and the
#     number of plugin calls a job makes.
# "Without" is the break-glass: the plugin taken out of the daemon's daemon.json and SIGHUP; the
# script puts it back (and SIGHUPs) on exit. Variants alternate in rounds; medians are printed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$(readlink -f "${1:-$REPO/target/release/jobdock}")
CALLS=${BENCH_CALLS:-2000}
JOBS=${BENCH_JOBS:-20}
NAME=jobdock-authz-test
ETC=/etc/$NAME
SOCK=/run/$NAME/docker.sock
PLUGIN_SOCK=/run/docker/plugins/$NAME.sock
CONFIG=$ETC/wrapper.toml
DAEMON_JSON=$ETC/daemon.json
PLUGIN_LOG=/var/log/jobdock-testbed/authz-plugin.log
IMAGE=127.0.0.1:5000/jobdock-test/busybox:latest
WORK=/home/jdalice

say() { printf 'bench-authz: %s\n' "$*"; }
[[ $(id -u) -eq 0 ]] || { say "run as root"; exit 1; }
[[ -x $BIN ]] || { say "$BIN missing: cargo build --release"; exit 1; }

dockerd_pid() { cat "/run/$NAME/docker.pid"; }
# Whether dockerd asks the plugin: it refuses a restart (403); dockerd alone answers 404 for a
# container that does not exist. (`docker info` still lists a plugin a reload took out.)
asks() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" -X POST \
    http://docker/containers/jobdock-authz-no-such/restart) == 403 ]]
}
set_plugin() { # on|off
  if [[ $1 == on ]]; then
    printf '{\n  "authorization-plugins": ["%s"]\n}\n' "$NAME" >"$DAEMON_JSON"
  else
    printf '{}\n' >"$DAEMON_JSON"
  fi
  kill -HUP "$(dockerd_pid)"
  local i
  for ((i = 0; i < 50; i++)); do
    if [[ $1 == on ]]; then asks && return 0; else asks || return 0; fi
    sleep 0.1
  done
  say "dockerd did not take the plugin $1 after SIGHUP"; exit 1
}
trap 'set_plugin on' EXIT

# The plugin under test, logging every decision (to count the calls of a job).
AUTHZ_PLUGIN_LOG_LEVEL=debug bash "$REPO/scripts/authz-testbed.sh" plugin "$BIN" >/dev/null
set_plugin on

say "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), dockerd $(docker -H "unix://$SOCK" version --format '{{.Server.Version}}'), $BIN"

# A jobdock create body, as the plugin receives it.
body=$(cd "$WORK" && "$BIN" plan --config "$CONFIG" --user jdalice --image "$IMAGE" --json -- true \
  | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["create"]))')

python3 - "$PLUGIN_SOCK" "$SOCK" "$CALLS" "$body" <<'EOF'
import base64, http.client, json, socket, statistics, sys, time
plugin, dockerd, calls, body = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)

def per_call(path, method, url, payload=None, headers={}):
    c = Unix(path)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        c.request(method, url, body=payload, headers=headers)
        r = c.getresponse()
        data = r.read()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, data

ping = json.dumps({"RequestMethod": "GET", "RequestUri": "/v1.41/_ping"})
create = json.dumps({"RequestMethod": "POST", "RequestUri": "/v1.41/containers/create?name=x",
                     "RequestHeaders": {"Content-Type": "application/json"},
                     "RequestBody": base64.b64encode(body.encode()).decode()})
for name, req in [("ping", ping), ("jobdock create", create)]:
    ms, data = per_call(plugin, "POST", "/AuthZPlugin.AuthZReq", req,
                        {"Content-Type": "application/json"})
    assert b'"Allow":true' in data, data
    print(f"bench-authz: plugin alone, AuthZReq for {name}: median {ms:.3f} ms per call ({calls} calls)")
EOF

ping_ms() {
  python3 - "$SOCK" "$CALLS" <<'EOF'
import http.client, socket, statistics, sys, time
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost"); self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(self.path)
c = Unix(sys.argv[1]); times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); c.request("GET", "/v1.41/_ping"); c.getresponse().read()
    times.append(time.perf_counter() - t)
print(f"{statistics.median(times) * 1e3:.3f}")
EOF
}

job_s() {
  local t0 t1
  t0=$(date +%s%N)
  (cd "$WORK" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$BIN" run --config "$CONFIG" \
    --user jdalice --image "$IMAGE" -- true) || { say "a job failed"; exit 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# Calls per job: the plugin's decisions logged while one job runs.
before=$(grep -c 'authz: allowed' "$PLUGIN_LOG" || true)
job_s >/dev/null
after=$(grep -c 'authz: allowed' "$PLUGIN_LOG" || true)
say "a jobdock job makes $((after - before)) API calls, each through the plugin"

on_ping=() off_ping=() on_job=() off_job=()
for _ in 1 2 3; do
  for mode in on off; do
    set_plugin "$mode"
    p=$(ping_ms)
    if [[ $mode == on ]]; then on_ping+=("$p"); else off_ping+=("$p"); fi
    for ((i = 0; i < JOBS / 3 + 1; i++)); do
      j=$(job_s)
      if [[ $mode == on ]]; then on_job+=("$j"); else off_job+=("$j"); fi
    done
  done
done
set_plugin on
mp_on=$(printf '%s\n' "${on_ping[@]}" | median)
mp_off=$(printf '%s\n' "${off_ping[@]}" | median)
mj_on=$(printf '%s\n' "${on_job[@]}" | median)
mj_off=$(printf '%s\n' "${off_job[@]}" | median)
say "GET /_ping through dockerd: median $mp_on ms with the plugin, $mp_off ms without (per-round medians of $CALLS calls: ${on_ping[*]} / ${off_ping[*]})"
say "a jobdock job (true): median $((mj_on / 1000)) ms with the plugin, $((mj_off / 1000)) ms without (${#on_job[@]} jobs each)"
say "load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
