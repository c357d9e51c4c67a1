#!/usr/bin/env bash
# Builds bench/kernels/build/libfluxk.so: every kernel under native/src/sm90 and native/src/sm80
# plus the extern "C" shims of capi*.cu, for sm_90a (FLUXK_GENCODE adds more, e.g.
# "-gencode=arch=compute_80,code=sm_80"). Static cudart, so the library loads next to torch's.
# Also writes per-kernel resource usage (registers, shared memory, spills) to build/resource-usage.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/build"
mkdir -p "$out/obj"
nvcc_bin="${NVCC:-nvcc}"
gencode=(-gencode=arch=compute_90a,code=sm_90a ${FLUXK_GENCODE:-})
flags=(-std=c++17 -O3 -lineinfo -Xcompiler -fPIC "${gencode[@]}" --resource-usage)
sources=("$root"/native/src/sm90/*.cu "$root"/native/src/sm80/*.cu "$here"/capi*.cu)
jobs="${JOBS:-$(nproc)}"

: > "$out/resource-usage.txt"
pids=()
objs=()
for src in "${sources[@]}"; do
  name="$(basename "$(dirname "$src")")_$(basename "${src%.cu}")"
  obj="$out/obj/$name.o"
  objs+=("$obj")
  if [[ "$obj" -nt "$src" && -z "${FLUXK_REBUILD:-}" ]] && \
     ! find "$root/native/src" -name '*.cuh' -newer "$obj" -o -name '*.h' -newer "$obj" | grep -q .; then
    continue
  fi
  ( "$nvcc_bin" "${flags[@]}" -c "$src" -o "$obj" > "$out/obj/$name.log" 2>&1 || { cat "$out/obj/$name.log"; exit 1; } ) &
  pids+=($!)
  if (( ${#pids[@]} >= jobs )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
cat "$out"/obj/*.log >> "$out/resource-usage.txt" 2>/dev/null || true
"$nvcc_bin" -shared "${gencode[@]}" -o "$out/libfluxk.so" "${objs[@]}"
if grep -E "spill (stores|loads)" "$out/resource-usage.txt" | grep -vq " 0 bytes spill stores, 0 bytes spill loads"; then
  echo "warning: register spills, see $out/resource-usage.txt" >&2
fi
echo "built $out/libfluxk.so"
