#!/usr/bin/env bash
# Stops exactly the nodes cluster/local/start.sh started (by their process ids, workers first).
# Never `ray stop`: that ends every Ray process of this user, embedded Rays of tests and notebooks too.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${DFT_PYTHON:-$here/../../.venv/bin/python}"
exec "$py" "$here/raylocal.py" ${DFT_LOCAL_CLUSTER_DIR:+--dir "$DFT_LOCAL_CLUSTER_DIR"} down
