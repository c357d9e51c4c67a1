#!/usr/bin/env bash
# Run on the GPU machine from the repository root (after native/scripts/gpu-pack.sh here, carry [".gpu"]):
# builds the addon with CMake directly (all cores, no cmake-js: the machine has no Node packages), then runs
# every native spec with FLUXLAB_REQUIRE_GPU=1 so that GPU tests fail rather than skip. Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-$PWD/.gpu/out}
mkdir -p "$OUT"
if [ -f ../shared/tools/gpu-env.sh ]; then . ../shared/tools/gpu-env.sh; else . .gpu/gpu-env.sh; fi
command -v node >/dev/null || { echo "gpu-test: no node" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
nvcc --version | tail -2 | tee -a "$OUT/gpu.txt"

rm -rf native/dist && cp -r .gpu/native-dist native/dist
INC="$PWD/.gpu/node_modules/node-api-headers/include;$PWD/.gpu/node_modules/node-addon-api"
start=$(date +%s)
cmake -S native -B native/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_JS_INC="$INC" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/native/build/Release" > "$OUT/build.log" 2>&1 &&
  cmake --build native/build -j "$(nproc)" >> "$OUT/build.log" 2>&1
status=$?
echo "build: exit $status in $(( $(date +%s) - start )) s" | tee -a "$OUT/build.log"
if [ $status -ne 0 ]; then tail -40 "$OUT/build.log"; exit $status; fi

export FLUXLAB_REQUIRE_GPU=1 FLUXLAB_BACKEND_OPS_LOG="$OUT/backend-ops.txt"
node --test --test-concurrency=1 native/dist/*.spec.js > "$OUT/test.log" 2>&1
status=$?
grep -E "^# (tests|pass|fail|skipped|duration)" "$OUT/test.log"
grep -E "^not ok|^    not ok|error:" "$OUT/test.log" | head -40
grep -E "^# (device 0|backend-ops|GPU tests)" "$OUT/test.log"
exit $status
