#!/usr/bin/env bash
# A local Ray cluster on this machine for scaled-down runs of the real jobs: a head and N worker nodes
# (cluster/local/raylocal.py), token authentication on, the project's venv on PATH for the jobs.
#
#   cluster/local/start.sh                          # head with 0 CPUs + 1 worker node with every CPU
#   DFT_RAY_WORKERS=2 DFT_RAY_CPUS=1 cluster/local/start.sh
#   eval "$(cluster/local/env.sh)"                   # RAY_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH
#   ray job submit --working-dir . -- python jobs/run.py --config jobs/configs/local_tiny.yaml --set run.uri=$PWD/runs/local
#   cluster/local/stop.sh                           # stops exactly what start.sh started (never `ray stop`)
#
# The dashboard and the job API listen on 127.0.0.1 only. Any other option of raylocal.py passes through.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${DFT_PYTHON:-$here/../../.venv/bin/python}"
if [[ ! -x "$py" ]]; then
  echo "the project venv is missing: run 'make install' first (or set DFT_PYTHON)" >&2
  exit 1
fi
exec "$py" "$here/raylocal.py" ${DFT_LOCAL_CLUSTER_DIR:+--dir "$DFT_LOCAL_CLUSTER_DIR"} up \
  --head-cpus "${DFT_RAY_HEAD_CPUS:-0}" \
  --workers "${DFT_RAY_WORKERS:-1}" \
  --worker-cpus "${DFT_RAY_CPUS:-$(nproc)}" \
  --worker-gpus "${DFT_RAY_GPUS:-0}" \
  ${DFT_RAY_DASHBOARD_PORT:+--dashboard-port "$DFT_RAY_DASHBOARD_PORT"} "$@"
