#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels the GPU run needs beyond what the GPU
# machine has (Python 3.12, torch, timm and its dependencies, numpy): matplotlib and its
# dependencies, for the figure. Nothing else is needed: the measurements import only torch,
# timm and the standard library. Output: benchmarks/gpu/wheels/ (git-ignored; the device
# tool carries it: carry ["benchmarks/gpu/wheels"]).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/wheels"
mkdir -p "$dest"
# --no-deps with an explicit list: pip would otherwise also fetch numpy, which the GPU
# machine has in the version its torch was built with.
python -m pip download --quiet --dest "$dest" --only-binary=:all: --no-deps \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any \
    matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six packaging pillow
ls -1 "$dest"
du -sh "$dest"
