#!/usr/bin/env bash
# Run on the GPU machine from the repository root (after scripts/gpu-pack.sh here; carry [".gpu"]). Builds the
# addon with CMake directly (all cores; the machine has Node but no npm packages), links the workspaces the way
# npm would, then runs the named suites with FLUXLAB_REQUIRE_GPU=1 so GPU tests fail rather than skip:
#   native   every native spec (the backend-ops test among them)
#   flux     the Flux GPU specs (goldens with --device cuda)
#   kernels  bench/kernels/bench.py (the standalone fluxk kernels against torch)
# Logs go to $OUT. Default suites: native flux.
set -uo pipefail
OUT=${OUT:-$PWD/.gpu/out}
mkdir -p "$OUT"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(native flux)
if [ -f ../shared/tools/gpu-env.sh ]; then . ../shared/tools/gpu-env.sh; else . .gpu/gpu-env.sh; fi
command -v node >/dev/null || { echo "gpu-test: no node" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/gpu.txt"

tar -xf .gpu/dist/dist.tar
mkdir -p node_modules/@fluxlab
ln -sfn ../../native node_modules/@fluxlab/native
ln -sfn ../kernel node_modules/fluxlab
INC="$PWD/.gpu/node_modules/node-api-headers/include;$PWD/.gpu/node_modules/node-addon-api"
start=$(date +%s)
cmake -S native -B native/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC="$INC" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/native/build/Release" > "$OUT/build.log" 2>&1 &&
  cmake --build native/build -j "$(nproc)" >> "$OUT/build.log" 2>&1
status=$?
echo "build: exit $status in $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
if [ $status -ne 0 ]; then tail -40 "$OUT/build.log"; exit $status; fi

export FLUXLAB_REQUIRE_GPU=1 FLUXLAB_BACKEND_OPS_LOG="$OUT/backend-ops.txt"
failed=0
for suite in "${suites[@]}"; do
  case "$suite" in
    native) specs=(native/dist/*.spec.js) ;;
    flux) specs=(kernel/dist/flux/*.gpu.spec.js) ;;
    kernels)
      { bash bench/kernels/build.sh && python3 bench/kernels/bench.py --out "$OUT"; } > "$OUT/kernels.log" 2>&1 || failed=1
      tail -40 "$OUT/kernels.log"
      continue ;;
    *) echo "gpu-test: unknown suite $suite" >&2; failed=1; continue ;;
  esac
  node --test --test-concurrency=1 "${specs[@]}" > "$OUT/$suite.log" 2>&1 || failed=1
  echo "== $suite"
  grep -E "^# (tests|pass|fail|skipped|duration)" "$OUT/$suite.log"
  grep -E "^not ok|^    not ok|error:" "$OUT/$suite.log" | head -40
  grep -E "^# (device 0|backend-ops|GPU tests)" "$OUT/$suite.log"
done
exit $failed
