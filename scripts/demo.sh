#!/usr/bin/env bash
# The README's first command: on a fresh Debian machine, set up the test bed and run a real job in
# a hardened container as the ordinary test user jdalice, showing who the job is inside.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/demo.sh: run as root (it installs packages and starts dockerd)" >&2
    exit 1
fi

bash scripts/testbed.sh up
echo "== building jobdock"
cargo build --release --quiet

JOBDOCK=target/release/jobdock
IMAGE=127.0.0.1:5000/jobdock-test/busybox:latest
echo
echo "== the container jobdock plans for jdalice's job (jobdock plan):"
# A job's environment, not root's: what a scheduler would hand jobdock.
JOBENV=(env -i PATH=/usr/bin:/bin HOME=/home/jdalice USER=jdalice LOGNAME=jdalice LANG=C.UTF-8)
(cd /home/jdalice && "${JOBENV[@]}" "$OLDPWD/$JOBDOCK" plan --user jdalice --image "$IMAGE" -- sh -c 'id; whoami')
echo
echo "== the job, run for real (jobdock run):"
cd /home/jdalice
exec "${JOBENV[@]}" "$OLDPWD/$JOBDOCK" run --user jdalice --image "$IMAGE" -- \
    sh -c 'echo "inside: $(whoami) on $(hostname)"; id; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status'
