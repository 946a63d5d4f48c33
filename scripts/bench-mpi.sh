#!/usr/bin/env bash
# Parallel-step benchmarks of BENCHMARKS.md (issue 14), on scripts/slurm-testbed.sh's two-node
# cluster jobdock-mpi, as jdalice through the installed jobdock (/usr/bin/jobdock, the package). Measures,
# never asserts; ROUNDS rounds, the variants interleaved within each round:
#   join      a step's 2nd task on a node joining its container alone (task 0 creates it and
#             holds it; task 1 starts 2 s later): task 1's `jobdock run -- true`, timed around
#             jobdock by the task's shell: the cost of one join
#   join16    the same with 16 tasks, 15 of them joining at once on the node's 2 CPUs: the
#             latency of a join within a burst (15 jobdock processes share 2 CPUs)
#   pingpong  scripts/mpi/pingpong.c, 2 ranks on one node: through jobdock (one step container,
#             PMIx, host network) vs the same binary on the host (srun --mpi=pmix, no container)
#   burst     16 tasks on one node, each `true`: srun through jobdock with a step container, the
#             same with a container per task (raw mode, LSB_DOCKER_RUN_RAW_ARGS=true, turns step
#             containers off), and 16 concurrent `docker run --rm` as root
# Usage (as root): bash scripts/bench-mpi.sh [ROUNDS]   (default 5). Prints raw lines and medians.
set -euo pipefail

ROUNDS=${1:-5}
IMAGE=jobdock-test/mpi
JOBDOCK=/usr/bin/jobdock
export SLURM_CONF=/etc/slurm-mpi/slurm.conf
USER_NAME=jdalice
work=$(mktemp -d /tmp/jobdock-bench-mpi.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
mpicc -O2 -o "$work/pingpong" "$(dirname "$0")/mpi/pingpong.c"

as_user() { runuser -u "$USER_NAME" -- env -C /tmp SLURM_CONF="$SLURM_CONF" "$@"; }
now_ms() { date +%s%N | awk '{ printf "%.1f", $1 / 1e6 }'; }

# shellcheck disable=SC2016  # expanded by the tasks' shells
join_task='[ "$SLURM_PROCID" = 0 ] || sleep 2
s=$(date +%s%N)
'"$JOBDOCK"' run --image '"$IMAGE"' -- sh -c "[ \$SLURM_PROCID = 0 ] && sleep 4; true"
e=$(date +%s%N)
echo "join task=$SLURM_PROCID us=$(( (e - s) / 1000 ))"'

for round in $(seq "$ROUNDS"); do
  # join: 2 tasks on n1, the second joining alone
  as_user srun -N1 -n2 -w n1 sh -c "$join_task" | sed "s/^/round=$round join2 /"
  # join16: 16 tasks on n1 (overcommitted: the node has 2 CPUs)
  as_user srun -N1 -n16 --overcommit -w n1 sh -c "$join_task" | sed "s/^/round=$round join16 /"

  # pingpong: jobdock, then the host
  as_user env LSB_DOCKER_NETWORK=host srun --mpi=pmix -N1 -n2 -w n1 \
    "$JOBDOCK" run --image "$IMAGE" -- /pingpong 8 20000 | grep '^pingpong' | sed "s/^/round=$round jobdock /"
  as_user srun --mpi=pmix -N1 -n2 -w n1 "$work/pingpong" 8 20000 | grep '^pingpong' | sed "s/^/round=$round host /"

  # burst: step container, container per task, docker run
  s=$(now_ms); as_user srun -N1 -n16 --overcommit -w n1 "$JOBDOCK" run --image "$IMAGE" -- true; e=$(now_ms)
  echo "round=$round burst step_container ms=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')"
  s=$(now_ms); as_user env LSB_DOCKER_RUN_RAW_ARGS=true srun -N1 -n16 --overcommit -w n1 \
    "$JOBDOCK" run --image "$IMAGE" -- true; e=$(now_ms)
  echo "round=$round burst container_per_task ms=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')"
  s=$(now_ms)
  for _ in $(seq 16); do docker run --rm --network none "$IMAGE" true & done
  wait
  e=$(now_ms)
  echo "round=$round burst docker_run ms=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')"
done | tee "$work/raw"

echo "== medians"
python3 - "$work/raw" <<'EOF'
import re, statistics, sys
series = {}
for line in open(sys.argv[1]):
    if m := re.search(r"(join2|join16) join task=(\d+) us=(\d+)", line):
        if m[2] != "0":
            what = "2nd task alone" if m[1] == "join2" else "tasks 2..16 at once"
            series.setdefault(f"join: {what}, jobdock run (ms)", []).append(int(m[3]) / 1000)
    elif m := re.search(r"(jobdock|host) pingpong .*latency_us=(\S+)", line):
        series.setdefault(f"pingpong 8 B one-way, {m[1]} (us)", []).append(float(m[2]))
    elif m := re.search(r"burst (\S+) ms=(\S+)", line):
        series.setdefault(f"burst 16 tasks, {m[1]} (ms)", []).append(float(m[2]))
for name, values in series.items():
    print(f"{name}: median {statistics.median(values):.3f} of {len(values)}")
EOF
