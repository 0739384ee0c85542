#!/usr/bin/env bash
# The one GPU command (docs/gpu.md), for a machine whose Python has torch but no network:
#   bash benchmarks/gpu_run.sh [gpu_run.py options]      (with .gpu-carry from `make gpu-carry` beside it)
# Installs the carried wheels into a throwaway folder first on the path, then runs benchmarks/gpu_run.py at the
# llava-1.5-7b shape within 8 minutes. Results go to $OUT when it is set (the device tool brings that folder
# back), else to benchmarks/results.
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu-carry
if [ ! -d "$carry/wheels" ]; then
  echo "error: $carry/wheels is missing: run \`make gpu-carry\` on a machine with the package index, and carry $carry" >&2
  exit 1
fi
site=/tmp/llavac-site
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$carry"/wheels/*.whl
# pyspark is too large to carry and no stage of this run imports it, but stages/common.py asks that every
# dependency of the installed project be present: register its name only (an empty distribution).
mkdir -p "$site/pyspark-0.dist-info"
printf 'Metadata-Version: 2.1\nName: pyspark\nVersion: 0\n' >"$site/pyspark-0.dist-info/METADATA"
export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH" PYTHONUNBUFFERED=1
export LLAVAC_CACHE="$PWD/$carry/cache" LLAVAC_GIT_COMMIT="$(cat "$carry/COMMIT")"
out=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 520 python3 benchmarks/gpu_run.py --sample "$carry/sample" --out-dir "$out" --budget-s 470 "$@"
