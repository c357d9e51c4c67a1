#!/usr/bin/env bash
# Run on the GPU machine from the repository root (after scripts/gpu-pack.sh here; carry [".gpu"]). Builds the
# addon with CMake directly (all cores; the machine has Node but no npm packages), links the workspaces the way
# npm would, then runs the named suites with FLUXLAB_REQUIRE_GPU=1 so GPU tests fail rather than skip:
#   native   every native spec (the backend-ops test among them)
#   flux     the Flux GPU specs (goldens with --device cuda)
#   kernels  bench/kernels/bench.py (the standalone fluxk kernels against torch), then bench/kernels/vae_t5.py
#            (the VAE / text-encoder kernels and a whole VAE decode against torch)
#   bench    fluxlab bench on RANDOM WEIGHTS at FLUX.1-dev's shapes: the pipeline table (bench.json), the
#            component figures (components.json) and the torch yardstick (torch.json), then a summary table;
#            each part time-limited (~6 min in all on an H100)
#   profile  component figures with resident/peak memory and each component's GPU time op by op (~3 min)
#   floor    bench/step_floor.py (the step's matmuls and attention alone, sustained, on torch's cuBLAS and SDPA and
#            on fluxlab's kernels) and fluxlab's 1024² transformer step, 30 steps a config, under bench/power.py
#   notebooks every notebook's code cells in order, as the scripts gpu-pack.sh made (the GPU paths; ~3 min)
# Logs go to $OUT. Default suites: native flux.
set -uo pipefail
OUT=${OUT:-$PWD/.gpu/out}
mkdir -p "$OUT"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(native flux)
if [ -f ../shared/tools/gpu-env.sh ]; then . ../shared/tools/gpu-env.sh; else . .gpu/gpu-env.sh; fi
command -v node >/dev/null || { echo "gpu-test: no node" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
# The commit the figures belong to: recorded by gpu-pack.sh (the tree here is a copy whose .git may be stale).
export FLUXLAB_COMMIT=${FLUXLAB_COMMIT:-$(cat .gpu/commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)}
echo "commit $FLUXLAB_COMMIT" | tee -a "$OUT/gpu.txt"

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
      python3 bench/kernels/vae_t5.py --out "$OUT" > "$OUT/vae_t5.log" 2>&1 || failed=1
      tail -70 "$OUT/vae_t5.log"
      continue ;;
    bench)
      run_part() { local limit=$1; shift; echo "== $*"; timeout "$limit" "$@" || { echo "(exit $?)"; failed=1; }; }
      {
        run_part 200 node kernel/bin/fluxlab.js bench --random-weights flux1-dev --json "$OUT/bench.json"
        run_part 120 node kernel/bin/fluxlab.js bench --random-weights flux1-dev --component all --json "$OUT/components.json"
        run_part 100 python3 bench/pipeline/torch_reference.py --out "$OUT/torch.json"
      } > "$OUT/bench.log" 2>&1
      grep -E "^(== |\(exit|fluxlab bench|device|note:)" "$OUT/bench.log"
      python3 bench/pipeline/summary.py "$OUT" | tee "$OUT/summary.txt"
      continue ;;
    profile)
      # Where the time and memory of each component go: component figures with resident/peak memory, and each
      # component's GPU time op by op (fluxlab bench --profile, CUDA events around every op).
      timeout 300 node kernel/bin/fluxlab.js bench --random-weights flux1-dev --component all --sizes 1024x1024 \
        --iterations 5 --profile --json "$OUT/components.json" > "$OUT/profile.log" 2>&1 || failed=1
      grep -vE "^bench:" "$OUT/profile.log" | head -60
      continue ;;
    floor)
      if ! bash bench/kernels/build.sh > "$OUT/kernels-build.log" 2>&1; then
        tail -20 "$OUT/kernels-build.log"; failed=1; continue
      fi
      {
        timeout 240 python3 bench/power.py -- python3 bench/step_floor.py --fluxk bench/kernels/build/libfluxk.so \
          --out "$OUT/floor.json"
        timeout 240 python3 bench/power.py -- node kernel/bin/fluxlab.js bench --random-weights flux1-dev \
          --component transformer --sizes 1024x1024 --iterations 30 --configs bf16:compile,nf4:eager,nf4:compile \
          --json "$OUT/components.json"
      } > "$OUT/floor.log" 2>&1 || failed=1
      grep -vE "^bench:" "$OUT/floor.log"
      continue ;;
    notebooks)
      for script in .gpu/notebooks/*.js; do
        name=$(basename "${script%.js}")
        (cd notebooks && timeout 480 node "../$script") > "$OUT/notebook-$name.log" 2>&1 || failed=1
        echo "== notebook $name: $(tail -1 "$OUT/notebook-$name.log")"
      done
      continue ;;
    *) echo "gpu-test: unknown suite $suite" >&2; failed=1; continue ;;
  esac
  node --test --test-concurrency=1 "${specs[@]}" > "$OUT/$suite.log" 2>&1 || failed=1
  echo "== $suite"
  grep -E "^# (tests|pass|fail|skipped|duration)" "$OUT/$suite.log"
  grep -E "^not ok|^    not ok|error:" "$OUT/$suite.log" | head -40
  grep -E "^# (device 0|backend-ops|GPU tests|graph:)" "$OUT/$suite.log"
done
exit $failed
