#!/usr/bin/env bash
# A local Ray "cluster" (one head, this machine) for scaled-down runs of the real jobs.
#
#   cluster/local/start.sh                # all CPUs, no GPU
#   DFT_RAY_CPUS=2 cluster/local/start.sh
#   export RAY_ADDRESS=http://127.0.0.1:8265
#   ray job submit --working-dir . -- python jobs/generate.py --config jobs/configs/local_tiny.yaml
#   cluster/local/stop.sh
#
# The dashboard (and the job API behind `ray job submit`) listens on 127.0.0.1 only.
set -euo pipefail

cpus="${DFT_RAY_CPUS:-$(nproc)}"
gpus="${DFT_RAY_GPUS:-0}"
port="${DFT_RAY_PORT:-6379}"
dashboard_port="${DFT_RAY_DASHBOARD_PORT:-8265}"
# Ray is in the project venv; use it when the caller has not activated one.
ray_bin="${DFT_RAY_BIN:-$(command -v ray || true)}"
if [[ -z "$ray_bin" ]]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  ray_bin="$here/.venv/bin/ray"
fi
if [[ ! -x "$ray_bin" ]]; then
  echo "ray not found: activate the project venv (make install) or set DFT_RAY_BIN" >&2
  exit 1
fi

export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
# Workers at niceness 0, as dft.cluster.connect does for an embedded Ray: on a small CPU machine Ray's
# default of 15 lets every daemon wake-up stall a CPU-bound actor (docs/generate.md). Export
# RAY_worker_niceness=15 before this script for Ray's default.
export RAY_worker_niceness="${RAY_worker_niceness:-0}"

# `ray job submit` talks to the dashboard's job API, which needs ray[default] (the project installs
# it). In an environment without it, start a head anyway and run drivers against it directly.
py="$(dirname "$ray_bin")/python"
[[ -x "$py" ]] || py=python3
if "$py" -c "import aiohttp_cors, opencensus" >/dev/null 2>&1; then
  dashboard=true
else
  dashboard=false
  echo "note: ray[default] is not installed, so no dashboard and no job API;" \
       "pip install 'ray[default]==2.60.0' for 'ray job submit'." >&2
fi

"$ray_bin" start --head \
  --port "$port" \
  --num-cpus "$cpus" \
  --num-gpus "$gpus" \
  --include-dashboard "$dashboard" \
  --dashboard-host 127.0.0.1 \
  --dashboard-port "$dashboard_port" \
  --disable-usage-stats

if [[ "$dashboard" == true ]]; then
  address="http://127.0.0.1:$dashboard_port"
  cat <<MSG

Local Ray is up ($cpus CPUs, $gpus GPUs). Submit jobs with:

  export RAY_ADDRESS=$address
  ray job submit --working-dir . -- python jobs/generate.py --config jobs/configs/local_tiny.yaml

Stop it with cluster/local/stop.sh
MSG
else
  address="127.0.0.1:$port"
  cat <<MSG

Local Ray is up ($cpus CPUs, $gpus GPUs), without the job API. Run drivers against it directly:

  export RAY_ADDRESS=$address
  python jobs/generate.py --config jobs/configs/local_tiny.yaml

Stop it with cluster/local/stop.sh
MSG
fi
echo "RAY_ADDRESS=$address"
