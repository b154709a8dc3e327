#!/usr/bin/env bash
# Stops the local Ray started by start.sh. `ray stop` ends every Ray process of this user on this
# machine, including embedded Rays of running tests or notebooks.
set -euo pipefail
ray_bin="${DFT_RAY_BIN:-$(command -v ray || true)}"
if [[ -z "$ray_bin" ]]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  ray_bin="$here/.venv/bin/ray"
fi
"$ray_bin" stop
