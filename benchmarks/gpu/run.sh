#!/usr/bin/env bash
# The prepared GPU run of issue 22 (benchmarks/gpu/README.md):
#   bash benchmarks/gpu/run.sh OUT_DIR            # the H200 plan, under 8 minutes
#   bash benchmarks/gpu/run.sh OUT_DIR --smoke    # one tiny model on the CPU (CI: tests/test_perf_gpu_script.py)
# Further options go to `python -m amod_bench.perf.gpu_run` (e.g. --budget train_compiled=120).
# The project runs from the repository with no install (PYTHONPATH); wheels fetched by
# fetch_wheels.sh, when present, are unpacked into a temporary folder that Python searches
# after its own packages, so nothing installed on the machine is replaced.
set -uo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash benchmarks/gpu/run.sh OUT_DIR [--smoke] [gpu_run options]" >&2
    exit 2
fi
command_line="bash benchmarks/gpu/run.sh $*"
out="$1"
shift
repo="$(cd "$(dirname "$0")/../.." && pwd)"
py=""
for candidate in ${PYTHON:-} python3 python; do  # the first interpreter that has torch and timm
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import importlib.util as u, sys
sys.exit(not (u.find_spec("torch") and u.find_spec("timm")))' 2>/dev/null; then
        py="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$py" ]; then
    echo "run.sh: no python with torch and timm on PATH (set PYTHON=...)" >&2
    exit 3
fi
mkdir -p "$out" && out="$(cd "$out" && pwd)"
smoke=0
for arg in "$@"; do [ "$arg" = "--smoke" ] && smoke=1; done
limit_s="${GPU_RUN_LIMIT_S:-$([ $smoke = 1 ] && echo 240 || echo 475)}"  # the plan's deadline is below it

extra_site=()
wheels="$repo/benchmarks/gpu/wheels"
if ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "run.sh: no wheels in benchmarks/gpu/wheels (fetch_wheels.sh): figures only if matplotlib is installed"
elif [ "$("$py" -c 'import sys; print(sys.version_info[:2] == (3, 12))')" != True ]; then
    echo "run.sh: the wheels are for Python 3.12, this is $("$py" -V 2>&1): not installed"
else
    site="$(mktemp -d)/site"
    if "$py" -m pip --version >/dev/null 2>&1; then
        "$py" -m pip install --quiet --no-index --no-deps --disable-pip-version-check --target "$site" \
            "$wheels"/*.whl || echo "run.sh: wheel install failed; figures may be missing" >&2
    else  # no pip: a wheel is a zip of what goes into site-packages
        for wheel in "$wheels"/*.whl; do "$py" -m zipfile -e "$wheel" "$site"; done
    fi
    extra_site=(--extra-site "$site")
fi

cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
timeout --kill-after=10 "$limit_s" "$py" -m amod_bench.perf.gpu_run "$out" --command "$command_line" \
    ${extra_site[@]+"${extra_site[@]}"} "$@" 2>&1 | tee "$out/log.txt"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ] && [ -f "$out/gpu_perf.json" ]; then
    # cut short (timeout) or failed: the JSON holds every finished section; summarise those
    echo "run.sh: gpu_run exited with $status; writing the summary of what was measured" | tee -a "$out/log.txt"
    "$py" -m amod_bench.perf.gpu_run "$out" --plot-only ${extra_site[@]+"${extra_site[@]}"} 2>&1 | tee -a "$out/log.txt"
fi
exit "$status"
