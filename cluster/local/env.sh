#!/usr/bin/env bash
# Prints the exports a shell needs to submit jobs to the local cluster: eval "$(cluster/local/env.sh)"
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${DFT_PYTHON:-$here/../../.venv/bin/python}"
exec "$py" "$here/raylocal.py" ${DFT_LOCAL_CLUSTER_DIR:+--dir "$DFT_LOCAL_CLUSTER_DIR"} env
