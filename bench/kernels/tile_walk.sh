#!/usr/bin/env bash
# On the GPU machine: bash bench/kernels/tile_walk.sh 4 6 8 12 — builds bench/kernels/tile_walk.cu against copies of
# the sm90 GEMMs whose tile-walk group is set to each given size, then runs them interleaved, three rounds, and prints
# TFLOP/s per shape (bf16 ping-pong and NF4). The figures behind kPpGroupM (gemm_bf16.cu).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../../native/src"
work="$(mktemp -d)"
for G in "$@"; do
  sed "s/constexpr int kPpGroupM = [0-9]*;/constexpr int kPpGroupM = $G;/" "$src/sm90/gemm_bf16.cu" > "$work/g$G.cu"
  sed "s/constexpr int kGroupM = [0-9]*;/constexpr int kGroupM = $G;/" "$src/sm90/gemm_nf4.cu" > "$work/q$G.cu"
  nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -I"$src/sm90" \
    "$here/tile_walk.cu" "$work/g$G.cu" "$work/q$G.cu" "$src/sm80/gemm_sm80.cu" "$src/sm80/gemv_nf4.cu" \
    -o "$work/walk$G" > "$work/build$G.log" 2>&1 || { cat "$work/build$G.log"; exit 1; } &
done
wait
nvidia-smi --query-gpu=name --format=csv,noheader
for round in 1 2 3; do for G in "$@"; do "$work/walk$G" "group$G"; done; done |
  awk '{key=$1" "$2" "$3" "$4" "$5; b[key]=b[key]" "$7; q[key]=q[key]" "$9} END {for (k in b) print k, "| bf16", b[k], "| nf4", q[k]}' |
  sort -k1,1 -k2,2 -k5,5
