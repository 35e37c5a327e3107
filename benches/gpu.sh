#!/usr/bin/env bash
# The CUDA checks in one script, sized for a short GPU lease (aim: under 8 minutes on an H100):
#   1. install the Python modules that fail to import, from wheels carried in wheels/
#      (fill it here with benches/gpu_wheels.sh);
#   2. the CUDA tests (pytest -m cuda);
#   3. every CUDA bench case, the compiled-vs-eager ratio bench included (benchmark JSON,
#      CUDA fidelity baseline written when benches/fidelity_baseline_cuda.json does not exist);
#   4. a 50-step bf16 training smoke test on the GPU.
# Everything goes to --out (default: $OUT if set, else results/gpu), the log too (gpu.log).
#
# usage: bash benches/gpu.sh [--dry-run] [--out DIR] [--data-dir DIR]
#   --data-dir  MNIST folder (default: $DIFFBENCH_DATA_DIR, else the shipped fixtures/mnist)
#   --dry-run   the same steps on the CPU at tiny sizes (minutes); CUDA-only steps are replaced
#               by their CPU counterparts, each said so in the log
# Environment: PYTHON (default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
OUTDIR="${OUT:-$REPO/results/gpu}"
DATA="${DIFFBENCH_DATA_DIR:-$REPO/fixtures/mnist}"
PY="${PYTHON:-python3}"
while (($#)); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUTDIR="$2"; shift ;;
    --data-dir) DATA="$2"; shift ;;
    *) echo "error: unknown argument '$1'; allowed: --dry-run, --out DIR, --data-dir DIR" >&2
       exit 2 ;;
  esac
  shift
done
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
DATA="$(cd "$DATA" && pwd)" || { echo "error: no MNIST folder at $DATA (--data-dir)" >&2; exit 2; }
cd "$REPO"
exec > >(tee -a "$OUTDIR/gpu.log") 2>&1
export DIFFBENCH_DATA_DIR="$DATA" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_TRACKING_URI="sqlite:///$OUTDIR/mlflow.db" PYTHONUNBUFFERED=1
START=$SECONDS
step() { echo; echo "== [$((SECONDS - START)) s] $*"; }

step "1. modules: install only what fails to import (from wheels/)"
missing=()
for pair in torchvision:torchvision mlflow:mlflow-skinny sqlalchemy:sqlalchemy alembic:alembic \
            diffusers:diffusers safetensors:safetensors tqdm:tqdm yaml:pyyaml \
            pydantic:pydantic matplotlib:matplotlib torchmetrics:torchmetrics pytest:pytest \
            pytest_benchmark:pytest-benchmark hypothesis:hypothesis; do
  "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "missing: ${missing[*]}"
  "$PY" -m pip install --no-index --find-links "$REPO/wheels" "${missing[@]}"
else
  echo "every module imports; nothing to install"
fi
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: "
      f"{torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
PY

if ((DRY)); then
  DEVICE=cpu
  NAME=dry-run-cpu
  BASELINE="$OUTDIR/fidelity_baseline_dry_run.json"  # recorded by this run: exercises the writer
  TESTS=(tests/test_compiled.py tests/test_train.py -k "compile or autocast or batch_indices")
  BENCHES=(benches/test_img2img.py benches/test_ratios.py
           -k "test_img2img and cpu-pixel-ddim-10-s0.3-b1 or test_compiled_against_eager and cpu-pixel"
           --diffbench-fidelity-baseline "$BASELINE" --diffbench-update-fidelity-baseline)
  TRAIN=(--device cpu --steps 3 --batch-size 8 --set train_images=64 --set model.base_channels=8)
else
  "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
    || { echo "error: no CUDA device here; use --dry-run on a CPU machine" >&2; exit 2; }
  DEVICE=cuda
  NAME="cuda-$("$PY" -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")"
  BASELINE="$REPO/benches/fidelity_baseline_cuda.json"
  [[ -f "$BASELINE" ]] || BASELINE="$OUTDIR/fidelity_baseline_cuda.json"  # the first GPU run
  TESTS=(tests -m cuda)
  BENCHES=(benches -m cuda --diffbench-fidelity-baseline-cuda "$BASELINE")
  TRAIN=(--device cuda --steps 50)
fi

step "2. tests on $DEVICE: ${TESTS[*]}"
((DRY)) && echo "dry run: CUDA-only tests replaced by the CPU compile, autocast and index tests"
"$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"

step "3. benches on $DEVICE -> $OUTDIR/$NAME.json (fidelity baseline: $BASELINE)"
((DRY)) && echo "dry run: one CPU img2img case and the CPU compiled-vs-eager bench (no CUDA graphs)"
"$PY" -m pytest -p no:cacheprovider -s "${BENCHES[@]}" --benchmark-json "$OUTDIR/$NAME.json"

step "4. training smoke test on $DEVICE (bf16 autocast on CUDA): ${TRAIN[*]}"
((DRY)) && echo "dry run: a CPU run in fp32 (bf16 autocast is CUDA's)"
"$PY" -m diffbench train pixel "${TRAIN[@]}" --out "$OUTDIR/train" --overwrite --data-dir "$DATA" \
  --set experiment=gpu-smoke
"$PY" - "$OUTDIR/train/pixel.safetensors" <<'PY'
import sys
from diffbench.io.checkpoints import load_metadata
m = load_metadata(sys.argv[1])
print(f"trained {m['step']} steps on {m['device']} in {m['train_seconds']:.1f} s, "
      f"{m['images_per_second']:.0f} images/s, final loss {m['final_loss']:.4f}")
PY

step "done in $((SECONDS - START)) s; files in $OUTDIR:"
ls -1 "$OUTDIR"
