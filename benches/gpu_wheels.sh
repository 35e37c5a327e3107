#!/usr/bin/env bash
# Fill wheels/ (ignored by git) with the wheels benches/gpu.sh may need on a GPU machine that
# cannot reach a package index: the modules its python3 is likely to lack, with their
# dependencies. Run here, where the index is reachable, then carry wheels/ with the checkout.
#   usage: bash benches/gpu_wheels.sh [PYTHON_VERSION] [TORCHVISION_VERSION]
# PYTHON_VERSION is the GPU machine's (default 3.12); TORCHVISION_VERSION must match its torch
# (torch 2.11 -> torchvision 0.26, the default). Keep wheels/ small: the carry limit is 64 MiB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYVER="${1:-3.12}"
TORCHVISION="${2:-0.26.0}"
common=(--only-binary=:all: --python-version "$PYVER" --platform manylinux_2_28_x86_64
        --platform manylinux2014_x86_64 --implementation cp -d wheels)
pip download "${common[@]}" mlflow-skinny sqlalchemy alembic diffusers
pip download "${common[@]}" --no-deps "torchvision==$TORCHVISION"  # its torch is already there
du -sh wheels
