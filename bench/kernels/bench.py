#!/usr/bin/env python3
"""Correctness checks and microbenchmarks of the fluxk kernels against torch, on one GPU.

    python3 bench/kernels/bench.py [--out DIR] [--only SUBSTR] [--quick]

Loads bench/kernels/build/libfluxk.so (bench/kernels/build.sh) with ctypes and runs every kernel
variant on torch tensors (data_ptr()s, a torch stream). Checks: fresh random inputs each time,
outputs poisoned with NaN first (an unwritten element shows as NaN), normalised error
||out - ref|| / ||ref|| against a float64 (small) or float32 (large) reference. Timings: CUDA events
around each call after warm-up, median of many calls, inputs rotated through enough copies to
exceed L2; torch (cuBLAS matmul, scaled_dot_product_attention) is timed in the same process on the
same shape as the yardstick.

Robustness: tests run in a worker subprocess; a test that raises is reported and the next one
runs; a crash or a hang (per-test timeout) kills the worker, the test is recorded as failed and a
fresh worker continues with the next test. The table always prints. Results go to DIR/results.json
and DIR/bench.log (DIR defaults to $OUT, else bench/kernels/out).
"""
import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(HERE, "build", "libfluxk.so")
L2_ROTATE_BYTES = 160 << 20  # rotate inputs until one pass over the copies exceeds ~3x the 50 MB L2

NF4_CODE = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]
EPI = {"none": 0, "nobias": 0, "gelu": 1, "gate": 2}
FLUX_GEMM = [(3072, 3072), (3072, 9216), (3072, 12288), (12288, 3072), (15360, 3072)]  # (K, N), M = 4608


# ----------------------------------------------------------------------------------------------
# Test list: every entry is independent (own inputs, own reference); ids are stable for the JSON.
# ----------------------------------------------------------------------------------------------
def build_tests(quick):
    """Ordered by what matters most, so that a run cut short still answers the main questions."""
    first, checks, timings, portable, fused = [], [], [], [], []

    def gemm(lst, mode, backend, tile, m, n, k, epi, cl=0, sched=0, split=1):
        lst.append(dict(op="gemm", mode=mode, backend=backend, tile=tile, cl=cl, m=m, n=n, k=k, epi=epi, sched=sched,
                        split=split))
        return lst[-1]

    def nf4(lst, mode, backend, tile, m, n, k, epi, dq=False, cl=0, split=1):
        lst.append(dict(op="nf4", mode=mode, backend=backend, tile=tile, cl=cl, m=m, n=n, k=k, epi=epi, dq=dq,
                        split=split))
        return lst[-1]

    def attn(lst, mode, backend, b, h, lq, lkv, layout="bhld", split=1):
        lst.append(dict(op="attn", mode=mode, backend=backend, b=b, h=h, lq=lq, lkv=lkv, layout=layout, split=split))
        return lst[-1]

    # 1. One check and the headline timing of each Hopper kernel.
    gemm(first, "check", 1, 0, 4608, 3072, 3072, "none")
    gemm(first, "time", 1, 0, 4608, 12288, 3072, "none")
    nf4(first, "check", 1, 0, 4608, 12288, 3072, "none")
    nf4(first, "time", 1, 0, 4608, 12288, 3072, "none")
    attn(first, "check", 4, 1, 24, 4608, 4608)
    attn(first, "time", 4, 1, 24, 4608, 4608)
    attn(first, "time", 3, 1, 24, 4608, 4608)
    nf4(first, "check", 3, 0, 1, 18432, 3072, "none")
    nf4(first, "time", 3, 0, 1, 18432, 3072, "none")
    gemm(first, "check", 3, 0, 1, 18432, 3072, "none")
    gemm(first, "time", 3, 0, 1, 18432, 3072, "none")
    first.append(dict(op="copy", mode="time"))

    # 2. Correctness of every variant (tile width x cluster), odd shapes and epilogues included.
    for tile in (256, 192, 128):
        for cl in (1, 2):
            for (m, n, k, epi) in [(4608, 3072, 3072, "none"), (333, 264, 200, "nobias"), (129, 136, 72, "gelu"),
                                   (1, 256, 64, "none"), (77, 3072, 3072, "gate")]:
                gemm(checks, "check", 1, tile, m, n, k, epi, cl)
    gemm(checks, "check", 1, 0, 4608, 3072, 3072, "gelu")
    gemm(checks, "check", 1, 0, 4608, 12288, 3072, "gate")
    # The ping-pong schedule (sched 2; 1 = cooperative): odd shapes, every epilogue, tiles per CTA odd/even.
    for (m, n, k, epi) in [(4608, 3072, 3072, "none"), (333, 264, 200, "nobias"), (129, 136, 72, "gelu"),
                           (1, 256, 64, "none"), (77, 3072, 3072, "gate"), (4608, 12288, 3072, "gelu"),
                           (4608, 3072, 12288, "gate"), (4608, 3072, 3072, "gate"), (1000, 1160, 4104, "gelu")]:
        gemm(checks, "check", 1, 0, m, n, k, epi, 0, 2)
    for tile in (256, 192, 128):
        for cl in (1, 2):
            for (m, n, k, epi, dq) in [(4608, 12288, 3072, "none", False), (333, 264, 320, "nobias", False),
                                       (200, 136, 64, "gelu", True), (4608, 3072, 12288, "gate", True)]:
                nf4(checks, "check", 1, tile, m, n, k, epi, dq, cl)
    for (m, n, k, epi, dq) in [(2, 9216, 3072, "gelu", True), (7, 3072, 320, "nobias", False),
                               (8, 136, 64, "gate", False), (9, 3072, 3072, "none", True),
                               (16, 3072, 3072, "gate", False), (16, 264, 192, "none", False),
                               (1, 136, 64, "gate", True), (3, 264, 448, "gelu", False), (13, 1160, 3072, "gate", True),
                               (1, 9216, 3072, "none", True), (5, 3080, 192, "nobias", True)]:
        nf4(checks, "check", 3, 0, m, n, k, epi, dq)
    # gemm_nf4_sm90_pair: the 512² double block's four pairs, partial tiles, double quant in the second product.
    for (ms_, n, k, epi, dq) in [((1024, 512), 9216, 3072, "none", False), ((1024, 512), 3072, 12288, "gate", True),
                                 ((300, 77), 264, 256, "gelu", True), ((33, 700), 136, 192, "gate", False)]:
        checks.append(dict(op="nf4pair", mode="check", ms=ms_, n=n, k=k, epi=epi, dq=dq))
    # gemv_nf4_concat: full-size rows, more parts than one launch takes (40), K % 128 = 64, 9 and 16 tokens.
    for (m, k, ns) in [(1, 3072, [18432, 9216, 6144]), (3, 192, [8 + 8 * (i % 9) for i in range(40)]),
                       (16, 128, [136, 264, 8]), (9, 3072, [3072, 136])]:
        checks.append(dict(op="nf4cat", mode="check", m=m, k=k, ns=ns))
    # The split last round (stream-K) where it applies on 132 SMs (the check fails there if the launch ran whole
    # tiles): pieces within one tile and across two, a tile's first piece waiting for up to 7 others, K blocks odd
    # (17), M odd, double quant, every epilogue.
    for (m, n, k, epi, dq) in [(512, 3072, 6144, "gate", False), (512, 12288, 3072, "gelu", True),
                               (1536, 9216, 3072, "none", False), (300, 9216, 1088, "nobias", True),
                               (512, 3072, 12288, "gate", True)]:
        nf4(checks, "check", 1, 0, m, n, k, epi, dq)["expect_split"] = True
    # The same for the bf16 ping-pong kernel (128 x 128 tiles; forced: the dispatch gives 1536x3072x15360 to the wide
    # kernel), K blocks odd (17, 65) and a partial last k-block.
    for (m, n, k, epi) in [(512, 9216, 3072, "none"), (1536, 3072, 15360, "gate"), (777, 3072, 1088, "gelu"),
                           (800, 3080, 4104, "nobias")]:
        gemm(checks, "check", 1, 0, m, n, k, epi, 0, 2)["expect_split"] = True
    # The ping-pong kernel's 192-wide tiles (tile 192, sched 2) and the wide cooperative kernel (sched 3: 192 x 192
    # tiles, three consumer warpgroups), forced, alone and in CTA pairs: partial tiles along N and M (odd tile-row
    # counts leave a pair's second tile out of range), every epilogue but the QK one (a head per tile: refused).
    for tile, sched in ((192, 2), (0, 3)):
        for cl in (1, 2):
            for (m, n, k, epi) in [(4608, 3072, 3072, "none"), (640, 264, 200, "nobias"), (129, 136, 72, "gelu"),
                                   (77, 3072, 3072, "gate"), (4608, 12288, 3072, "gelu"), (4608, 3072, 12288, "gate"),
                                   (1000, 1160, 4104, "gelu"), (4096, 3072, 3072, "gate")]:
                gemm(checks, "check", 1, tile, m, n, k, epi, cl, sched)
    # The 192-wide ping-pong tiles split: K blocks odd, the split's shapes at 192 columns.
    for (m, n, k, epi) in [(512, 13824, 3072, "none"), (1536, 4608, 15360, "gate"), (777, 4608, 1088, "gelu"),
                           (1300, 4616, 4104, "nobias")]:
        gemm(checks, "check", 1, 192, m, n, k, epi, 1, 2)["expect_split"] = True
    # The skinny bf16 kernel (gemv, M <= 16): odd M, N a multiple of 8 but not of 16, K a multiple of 8 but not of
    # 32, every epilogue; gate rows per batch are M // 2 (gate rows 1, 3, 8 for M 3, 7, 16).
    for (m, n, k, epi) in [(1, 136, 64, "gate"), (3, 264, 200, "gelu"), (7, 3080, 3072, "nobias"),
                           (7, 136, 200, "gate"), (16, 264, 64, "none"), (16, 3072, 3072, "gate"),
                           (9, 1160, 4104, "gelu"), (3, 9216, 3072, "none"), (1, 8, 8, "none"),
                           (16, 18432, 3072, "gelu")]:
        gemm(checks, "check", 3, 0, m, n, k, epi)
    for backend in (4, 1, 3):
        for (b, h, lq, lkv, layout) in [(2, 3, 200, 333, "bhld"), (1, 2, 1, 77, "bhld"), (1, 4, 640, 640, "blhd"),
                                        (2, 2, 129, 128, "blhd")]:
            attn(checks, "check", backend, b, h, lq, lkv, layout)
    attn(checks, "check", 1, 1, 24, 4608, 4608)
    attn(checks, "check", 3, 1, 24, 4608, 4608)
    # Attention's split last round on 132 SMs (the check fails there if the launch ran whole units): the 512² step's
    # 1x24x1536 (288 units: 24 left over, 5 pieces each), odd lengths (143 units, 11 left over, 8 key blocks in 8
    # pieces, the last partial), batch 2 in the [B, L, H, D] layout, every schedule.
    for backend in (4, 1, 3):
        for (b, h, lq, lkv, layout) in [(1, 24, 1536, 1536, "blhd"), (1, 11, 1600, 1000, "bhld"),
                                        (2, 9, 1000, 777, "blhd")]:
            attn(checks, "check", backend, b, h, lq, lkv, layout)["expect_split"] = True

    # 3. Timings of the Flux shapes for each tile width and cluster setting.
    variants = [(0, 0)] if quick else [(0, 0), (256, 1), (256, 2), (192, 1), (192, 2), (128, 1), (128, 2)]
    for (k, n) in FLUX_GEMM:
        for tile, cl in variants:
            if not (tile == 0 and (k, n) == (3072, 12288)):
                gemm(timings, "time", 1, tile, 4608, n, k, "none", cl)
    gemm(timings, "time", 1, 0, 4608, 12288, 3072, "gelu")
    gemm(timings, "time", 1, 0, 4608, 3072, 12288, "gate")
    # Cooperative (sched 1, its picked tile) against ping-pong (sched 2) on the transformer's GEMMs with
    # the epilogues they run (FLUX.1: attention out + gate, QKV, MLP up + gelu, MLP down + gate,
    # single-block linear1 and proj_out + gate), adjacent so the pair sees the same clocks.
    for (k, n, epi) in [(3072, 3072, "gate"), (3072, 9216, "none"), (3072, 12288, "gelu"), (12288, 3072, "gate"),
                        (3072, 21504, "none"), (15360, 3072, "gate"), (3072, 3072, "none"), (3072, 12288, "none"),
                        (12288, 3072, "none")]:
        for sched in (1, 2):
            gemm(timings, "time", 1, 0, 4608, n, k, epi, 0, sched)
    # Other token counts: 4096 image tokens alone (double blocks' image stream), 512 text tokens and 1024.
    for (m, k, n, epi) in [(4096, 12288, 3072, "gate"), (4096, 3072, 12288, "gelu"), (4096, 3072, 3072, "gate"),
                           (4096, 3072, 9216, "none"), (512, 12288, 3072, "gate"), (512, 3072, 12288, "gelu"),
                           (1024, 3072, 12288, "gelu")]:
        for sched in (1, 2):
            gemm(timings, "time", 1, 0, m, n, k, epi, 0, sched)
    for tile, cl in variants[1:]:
        nf4(timings, "time", 1, tile, 4608, 12288, 3072, "none", False, cl)
    nf4(timings, "time", 1, 0, 4608, 12288, 3072, "none", True)
    for (k, n) in [(3072, 3072), (12288, 3072), (3072, 9216), (15360, 3072)]:
        nf4(timings, "time", 1, 0, 4608, n, k, "none")
    # Whole tiles only against the split last round, adjacent, on the shapes where the split applies (132 SMs):
    # the issue's 4608 x 12288 x 3072 and the transformer's 512 / 1024 / 1536 / 4096-row NF4 GEMMs.
    for (m, n, k) in [(4608, 12288, 3072), (512, 3072, 12288), (512, 12288, 3072), (512, 9216, 3072),
                      (1024, 9216, 3072), (1536, 9216, 3072), (1536, 12288, 3072),
                      (4096, 9216, 3072)]:
        for split in (0, 1):
            nf4(timings, "time", 1, 0, m, n, k, "none", False, 0, split)
    # The same for the bf16 ping-pong kernel: the transformer's shapes whose 128 x 128 tiles leave the last round
    # mostly idle (the single blocks' proj_out at 512² and 1024², the 512 / 1024-row gate projections, gelu at 4608).
    for (m, n, k, epi) in [(1536, 3072, 15360, "gate"), (4608, 3072, 15360, "gate"), (1024, 3072, 12288, "gate"),
                           (512, 3072, 12288, "gate"), (512, 3072, 3072, "gate"), (4608, 12288, 3072, "gelu"),
                           (1536, 9216, 3072, "none"), (1024, 3072, 3072, "gate"), (1536, 12288, 3072, "gelu"),
                           (512, 9216, 3072, "none"), (4608, 3072, 3072, "gate")]:
        for split in (0, 1):
            gemm(timings, "time", 1, 0, m, n, k, epi, 0, 0, split)
    # The skinny (modulation) shapes: GB/s of weight + activations; torch = F.linear on the bf16 weight. bf16 gemv
    # beside the sm90 GEMM that served M <= 16 before it, adjacent so both see the same clocks.
    for (m, n, k) in [(1, 9216, 3072), (1, 3072, 3072), (16, 18432, 3072)]:
        nf4(timings, "time", 3, 0, m, n, k, "none")
    nf4(timings, "time", 3, 0, 1, 18432, 3072, "none", True)
    # The 512² double block's image (1024 rows) and text (512 rows) products as pairs against one after the other.
    for (n, k, epi) in [(3072, 3072, "gate"), (12288, 3072, "gelu"), (3072, 12288, "gate"), (9216, 3072, "none")]:
        timings.append(dict(op="nf4pair", mode="time", ms=(1024, 512), n=n, k=k, epi=epi, dq=False))
    # Flux's 77 adaptive-norm projections of one step side by side (38 double-block norm1 + norm1_context rows of
    # 18432, 38 single-block rows of 9216, norm_out's 6144): one launch per 32 weights against 77.
    timings.append(dict(op="nf4cat", mode="time", m=1, k=3072, ns=[18432] * 38 + [9216] * 38 + [6144]))
    for (m, n) in [(1, 18432), (1, 9216), (1, 3072), (16, 18432)]:
        for backend in (3, 1):
            gemm(timings, "time", backend, 0, m, n, 3072, "none")
    attn(timings, "time", 1, 1, 24, 4608, 4608)
    attn(timings, "time", 4, 1, 24, 4096, 4096)
    attn(timings, "time", 3, 1, 24, 4096, 4096)
    # The three schedules back to back at the Flux size.
    for backend in (4, 1, 3, 4):
        attn(timings, "time", backend, 1, 24, 4608, 4608)
    # The layout the transformer runs ([B, L, H, D] from ops.jointQkv) against [B, H, L, D], adjacent.
    for layout in ("blhd", "bhld", "blhd"):
        attn(timings, "time", 4, 1, 24, 4608, 4608, layout)
    # Whole units only against the split last round, adjacent, twice: the 512² step's attention (1536 tokens).
    for split in (0, 1, 0, 1):
        attn(timings, "time", 4, 1, 24, 1536, 1536, "blhd", split)

    # 4. The portable sm80 paths (correctness first, then one timing each).
    for (m, n, k, epi) in [(333, 264, 200, "nobias"), (4608, 3072, 3072, "gelu"), (77, 3072, 3072, "gate")]:
        gemm(portable, "check", 2, 0, m, n, k, epi)
    for (m, n, k, epi, dq) in [(333, 264, 320, "nobias", False), (1024, 3072, 3072, "gelu", True)]:
        nf4(portable, "check", 2, 0, m, n, k, epi, dq)
    for (b, h, lq, lkv, layout) in [(1, 24, 4608, 4608, "bhld"), (2, 3, 200, 333, "bhld"), (1, 2, 1, 77, "bhld"),
                                    (2, 2, 129, 128, "blhd")]:
        attn(portable, "check", 2, b, h, lq, lkv, layout)
    gemm(portable, "time", 2, 0, 4608, 3072, 3072, "none")
    nf4(portable, "time", 2, 0, 4608, 12288, 3072, "none")
    attn(portable, "time", 2, 1, 24, 4608, 4608)

    # 5. The QKV projection with QK-norm + RoPE in its epilogue (kQkNormRope: backend 1 the bf16 ping-pong GEMM, 2 the
    # NF4 GEMM), each token stream (tokens, joint offset) one call into the joint q, k, v [B, joint, H, 128]; and the
    # two-part A (GemmArgs::a2, Flux's single-block proj_out over [attention | MLP] without the concat). Appended last,
    # so the ids of the sections above stay what earlier results.json files hold.
    def qk(lst, mode, backend, b, streams, joint, heads, k, dq=False):
        lst.append(dict(op="qkrope", mode=mode, backend=backend, b=b, streams=streams, joint=joint, heads=heads, k=k,
                        dq=dq))

    def two_part(lst, mode, m, n, k1, k2, epi):
        lst.append(dict(op="gemm2", mode=mode, m=m, n=n, k1=k1, k2=k2, epi=epi))

    for backend in (1, 2):
        qk(fused, "check", backend, 1, [(4608, 0)], 4608, 24, 3072)                        # single block
        qk(fused, "check", backend, 1, [(512, 0), (4096, 512)], 4608, 24, 3072, backend == 2)  # double block
        qk(fused, "check", backend, 2, [(300, 512)], 812, 24, 3072)        # batch 2, rows around it stay unwritten
        qk(fused, "check", backend, 1, [(777, 0)], 777, 3, 200 if backend == 1 else 320)  # odd M (NF4: K % 64)
    for backend in (1, 2):
        qk(fused, "time", backend, 1, [(4608, 0)], 4608, 24, 3072)
    two_part(fused, "check", 4608, 3072, 3072, 12288, "gate")
    two_part(fused, "check", 600, 264, 192, 320, "gate")
    two_part(fused, "check", 777, 136, 128, 200, "nobias")  # odd M, second part's K not a multiple of 64
    two_part(fused, "refuse", 600, 264, 200, 312, "gate")   # k_split 200: not a multiple of 64
    two_part(fused, "refuse", 333, 264, 192, 320, "gate")   # M < 512: the ping-pong schedule only
    two_part(fused, "time", 4608, 3072, 3072, 12288, "gate")

    # 6. Ping-pong with 2-CTA clusters (vertically adjacent tiles share W: each CTA loads half and multicasts it),
    # checks on odd shapes (odd tile-row counts leave the last pair's second tile out of range), then each Flux
    # shape with clusters off/on adjacent; and the cooperative and NF4 cluster variants once more.
    clusters = []
    for (m, n, k, epi) in [(4608, 3072, 3072, "none"), (640, 264, 200, "nobias"), (520, 136, 72, "gelu"),
                           (4608, 12288, 3072, "gelu"), (4608, 3072, 12288, "gate"), (1000, 1160, 4104, "gelu"),
                           (4096, 3072, 3072, "gate")]:
        gemm(clusters, "check", 1, 0, m, n, k, epi, 2, 2)
    for (m, k, n, epi) in [(4608, 3072, 12288, "none"), (4608, 3072, 12288, "gelu"), (4608, 12288, 3072, "gate"),
                           (4608, 3072, 9216, "none"), (4608, 3072, 3072, "gate"), (4608, 15360, 3072, "gate"),
                           (4096, 3072, 12288, "gelu"), (4096, 12288, 3072, "gate"), (512, 3072, 12288, "gelu"),
                           (512, 12288, 3072, "gate")]:
        for cl in (1, 2):
            gemm(clusters, "time", 1, 0, m, n, k, epi, cl, 2)
    for cl in (1, 2):
        gemm(clusters, "time", 1, 256, 4608, 12288, 3072, "none", cl, 1)
        nf4(clusters, "time", 1, 0, 4608, 12288, 3072, "none", False, cl)

    t = first + checks + timings + portable + fused + clusters
    for i, x in enumerate(t):
        x["id"] = i
    return t


# ----------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------
class Lib:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        vp, ll, i, f = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_float
        self.lib.fk_error_string.restype = ctypes.c_char_p
        self.lib.fk_error_string.argtypes = [i]
        self.lib.fk_gemm_bf16.restype = i
        self.lib.fk_gemm_bf16.argtypes = [i, vp, ll, vp, ll, vp, ll, i, i, i, i, vp, vp, ll, vp, ll, i, i, i, i, vp]
        self.lib.fk_gemm_nf4.restype = i
        self.lib.fk_gemm_nf4.argtypes = [i, vp, ll, vp, i, i, vp, vp, vp, vp, f, vp, ll, i, i, vp, vp, ll, vp, ll, i,
                                         i, i, vp]
        self.lib.fk_set_split.restype = None
        self.lib.fk_set_split.argtypes = [i]
        self.lib.fk_last_split_bytes.restype = ctypes.c_ulonglong
        self.lib.fk_last_split_bytes.argtypes = []
        self.lib.fk_gemm_bf16_two_part.restype = i
        self.lib.fk_gemm_bf16_two_part.argtypes = [i, vp, ll, vp, ll, i, vp, ll, vp, ll, i, i, i, i, vp, vp, ll, vp, ll,
                                                   i, i, vp]
        self.lib.fk_gemm_qk_norm_rope.restype = i
        self.lib.fk_gemm_qk_norm_rope.argtypes = [i, vp, ll, vp, ll, vp, vp, vp, vp, vp, f, vp, vp, vp, vp, vp, vp, vp,
                                                  vp, i, i, i, i, i, i, f, vp]
        P = ctypes.POINTER
        self.lib.fk_gemv_nf4_concat.restype = i
        self.lib.fk_gemv_nf4_concat.argtypes = [i, vp, ll, i, vp, ll, i, P(vp), P(i), P(vp), P(vp), P(vp), P(vp), P(f),
                                                P(vp), vp]
        self.lib.fk_attention.restype = i
        self.lib.fk_attention.argtypes = [i, vp, vp, vp, vp, i, i, i, i, ctypes.POINTER(ll), f, vp]

    def check(self, code, what):
        if code != 0:
            raise RuntimeError(f"{what}: {self.lib.fk_error_string(code).decode()} ({code})")


def family(tc):
    return f"{tc['op']}:{tc.get('backend', 0)}"


def selftest_worker(tests, start, results_path, skip_families):
    """Exercises the parent's recovery paths without a GPU: ok, failure, crash, hang by test id."""
    out = open(results_path, "a")
    out.write(json.dumps({"device": "selftest"}) + "\n")
    out.flush()
    for tc in tests[start:]:
        if family(tc) in skip_families:
            out.write(json.dumps({"id": tc["id"], "ok": False, "error": "skipped"}) + "\n")
            out.flush()
            continue
        out.write(json.dumps({"begin": tc["id"]}) + "\n")
        out.flush()
        kind = tc["id"] % 7
        if kind == 2:
            os._exit(3)
        if kind == 3 and tc["op"] == "gemm":
            time.sleep(1000)
        res = {"id": tc["id"], "ok": kind != 1, "err": 1e-3, "ms": 1.0, "tflops": 100.0}
        if kind == 1:
            res["error"] = "simulated failure"
        out.write(json.dumps(res) + "\n")
        out.flush()


def worker(tests, start, results_path, lib_path, skip_families, profile=False):
    if os.environ.get("FLUXK_BENCH_SELFTEST"):
        return selftest_worker(tests, start, results_path, skip_families)
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    lib = Lib(lib_path)
    dev = torch.device("cuda")
    stream = torch.cuda.Stream()
    torch.cuda.set_stream(stream)
    sp = ctypes.c_void_p(stream.cuda_stream)
    out = open(results_path, "a")

    def emit(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def ptr(x):
        return ctypes.c_void_p(x.data_ptr()) if x is not None else ctypes.c_void_p(0)

    def poison(x):
        x.view(torch.int16).fill_(-1)  # 0xFFFF: a bf16 NaN

    def nerr(out_t, ref):
        o = out_t.double()
        r = ref.double()
        if torch.isnan(o).any():
            return float("nan")
        return (torch.linalg.vector_norm(o - r) / torch.linalg.vector_norm(r)).item()

    def timeit(fn, n_rot, budget_s=0.25):
        for i in range(3):
            fn(i % n_rot)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(0)
        torch.cuda.synchronize()
        one = max(time.perf_counter() - t0, 1e-5)
        iters = int(min(200, max(10, budget_s / one)))
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for i in range(iters):
            ev[i][0].record(stream)
            fn(i % n_rot)
            ev[i][1].record(stream)
        torch.cuda.synchronize()
        ts = sorted(a.elapsed_time(b) for a, b in ev)
        return {"ms": ts[len(ts) // 2], "ms_min": ts[0], "ms_p90": ts[int(len(ts) * 0.9)], "iters": iters}

    def timepair(mine_fn, ref_fn, n_rot, rounds=3):
        """Alternates the two sides over several rounds so clock drift hits both alike."""
        a, b = [], []
        for _ in range(rounds):
            a.append(timeit(mine_fn, n_rot, 0.1))
            b.append(timeit(ref_fn, n_rot, 0.1))

        def merge(ts):
            ms = sorted(t["ms"] for t in ts)
            return {"ms": ms[len(ms) // 2], "ms_min": min(t["ms_min"] for t in ts), "rounds": [t["ms"] for t in ts],
                    "iters": sum(t["iters"] for t in ts)}
        return merge(a), merge(b)

    def rotations(bytes_per_call):
        return int(min(8, max(1, math.ceil(L2_ROTATE_BYTES / max(1, bytes_per_call)))))

    # ---- epilogue reference ----
    def epi_inputs(m, n, epi, rows_per_batch):
        bias = None if epi == "nobias" else (torch.randn(n, device=dev) * 0.5).bfloat16()
        res = gate = None
        if epi == "gate":
            res = torch.randn(m, n, device=dev).bfloat16()
            gate = torch.randn((m + rows_per_batch - 1) // rows_per_batch, n, device=dev).bfloat16()
        return bias, res, gate

    def epi_ref(acc, bias, res, gate, epi, rows_per_batch):
        v = acc + bias.double() if bias is not None else acc
        if epi == "gelu":
            v = 0.5 * v * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
        if epi == "gate":
            rows = torch.arange(v.shape[0], device=dev) // rows_per_batch
            v = res.double() + gate.double()[rows] * v
        return v

    def ref_matmul(a, w):
        # float64 for small problems; float32 (no TF32) otherwise; both far below bf16 rounding.
        if a.shape[0] * w.shape[0] * a.shape[1] <= (1 << 31):
            return a.double() @ w.double().t()
        return (a.float() @ w.float().t()).double()

    # ---- NF4 helpers ----
    code = torch.tensor(NF4_CODE, device=dev)
    mids = (code[1:] + code[:-1]) / 2

    def make_nf4(n, k, dq):
        w = torch.randn(n, k, device=dev) * 0.05
        blocks = w.reshape(-1, 64)
        amax = blocks.abs().amax(1).clamp_min(1e-8)
        q = {}
        if dq:
            nb = amax.numel()
            q["absmax_q"] = torch.randint(0, 256, (nb,), device=dev, dtype=torch.uint8)
            q["absmax_code"] = torch.sort(torch.rand(256, device=dev) * 0.9 + 0.1).values
            q["nested_absmax"] = torch.rand((nb + 255) // 256, device=dev) * 0.04 + 0.01
            q["nested_offset"] = 0.02
            amax = (q["absmax_code"][q["absmax_q"].long()] * q["nested_absmax"][torch.arange(nb, device=dev) // 256]
                    ) + q["nested_offset"]
            q["absmax"] = None
        else:
            q["absmax"] = amax.contiguous()
            q["absmax_q"] = q["absmax_code"] = q["nested_absmax"] = None
            q["nested_offset"] = 0.0
        idx = torch.bucketize((blocks / blocks.abs().amax(1, keepdim=True).clamp_min(1e-8)).reshape(-1), mids)
        idx = idx.to(torch.uint8)
        q["packed"] = ((idx[0::2] << 4) | idx[1::2]).contiguous()
        w_deq = (code[idx.long()].reshape(-1, 64) * amax[:, None]).reshape(n, k).bfloat16()
        return q, w_deq

    def call_nf4(backend, a, q, n, k, c, m, epi, bias, res, gate, rpb, tile, cluster=0):
        lib.check(lib.lib.fk_gemm_nf4(backend, ptr(a), a.stride(0), ptr(q["packed"]), n, k, ptr(q["absmax"]),
                                      ptr(q["absmax_q"]), ptr(q["absmax_code"]), ptr(q["nested_absmax"]),
                                      ctypes.c_float(q["nested_offset"]), ptr(c), c.stride(0), m, EPI[epi],
                                      ptr(bias), ptr(res), res.stride(0) if res is not None else 0, ptr(gate),
                                      gate.stride(0) if gate is not None else 0, rpb, tile, cluster, sp),
                  "fk_gemm_nf4")

    def nf4cat_args(qs, ns, biases):
        """fk_gemv_nf4_concat's per-part arrays (made once per weight set, outside the timed calls)."""
        vps = lambda xs: (ctypes.c_void_p * len(xs))(*[ptr(x) for x in xs])
        return (len(qs), vps([q["packed"] for q in qs]), (ctypes.c_int * len(ns))(*ns),
                vps([q["absmax"] for q in qs]), vps([q["absmax_q"] for q in qs]), vps([q["absmax_code"] for q in qs]),
                vps([q["nested_absmax"] for q in qs]), (ctypes.c_float * len(qs))(*[q["nested_offset"] for q in qs]),
                vps(biases))

    def call_nf4cat(a, c, m, k, args):
        n_parts, packed, ns, absmax, absmax_q, absmax_code, nested, offsets, biases = args
        lib.check(lib.lib.fk_gemv_nf4_concat(n_parts, ptr(a), a.stride(0), m, ptr(c), c.stride(0), k, packed, ns,
                                             absmax, absmax_q, absmax_code, nested, offsets, biases, sp),
                  "fk_gemv_nf4_concat")

    def call_gemm(backend, a, w, c, m, n, k, epi, bias, res, gate, rpb, tile, cluster=0, sched=0):
        lib.check(lib.lib.fk_gemm_bf16(backend, ptr(a), a.stride(0), ptr(w), w.stride(0), ptr(c), c.stride(0), m, n, k,
                                       EPI[epi], ptr(bias), ptr(res), res.stride(0) if res is not None else 0,
                                       ptr(gate), gate.stride(0) if gate is not None else 0, rpb, tile, cluster,
                                       sched, sp),
                  "fk_gemm_bf16")

    def torch_epi(y, res, gate, epi, rpb, out=None):
        """torch's epilogue on its bf16 linear output y (bias already added): Flux's x + gate_msa · y with the gate
        broadcast over each batch's rows, one rounding (addcmul computes in float32)."""
        if epi == "gelu":
            return F.gelu(y, approximate="tanh")
        if epi != "gate":
            return y
        m, n = y.shape
        if m % rpb:
            return torch.addcmul(res, gate[torch.arange(m, device=dev) // rpb], y, out=out)
        shape = (m // rpb, rpb, n)
        return torch.addcmul(res.view(shape), gate.view(m // rpb, 1, n), y.view(shape),
                             out=None if out is None else out.view(shape)).view(m, n)

    def call_gemm2(a1, a2, k_split, w, c, m, n, k, epi, bias, res, gate, rpb, sched=0):
        """The two-part A: returns the cudaError_t code (refusals are checked by the caller)."""
        return lib.lib.fk_gemm_bf16_two_part(1, ptr(a1), a1.stride(0), ptr(a2), a2.stride(0), k_split, ptr(w),
                                             w.stride(0), ptr(c), c.stride(0), m, n, k, EPI[epi], ptr(bias), ptr(res),
                                             res.stride(0) if res is not None else 0, ptr(gate),
                                             gate.stride(0) if gate is not None else 0, rpb, sched, sp)

    # ---- the QKV projection with QK-norm + RoPE (kQkNormRope) ----
    qk_eps = 1e-6  # Flux's RMSNorm eps

    def rope_tables(tokens):
        # Flux's float32 tables: one angle per interleaved pair (theta 10000 over the head's 64 pairs), repeated for
        # both columns of the pair; positions up to Flux's 128-step latent grid
        freqs = 1.0 / (10000.0 ** (torch.arange(0, 128, 2, device=dev).float() / 128))
        ang = (torch.rand(tokens, 1, device=dev) * 128) * freqs
        return ang.cos().repeat_interleave(2, -1).contiguous(), ang.sin().repeat_interleave(2, -1).contiguous()

    def qk_stream(b, tokens, heads, k, backend, dq):
        """One token stream's inputs: x [b·tokens, k], the projection weight (bf16, or NF4 with its dequantized
        bf16 values for torch), bias, the q/k norm weights and the stream's rows of the rope tables."""
        n = 3 * heads * 128
        s = {"a": torch.randn(b * tokens, k, device=dev).bfloat16(), "nf": None,
             "bias": (torch.randn(n, device=dev) * 0.5).bfloat16(),
             "nq": (1 + 0.2 * torch.randn(128, device=dev)).bfloat16(),
             "nk": (1 + 0.2 * torch.randn(128, device=dev)).bfloat16()}
        if backend == 1:
            s["w"] = (torch.randn(n, k, device=dev) / math.sqrt(k)).bfloat16()
        else:
            s["nf"], s["w"] = make_nf4(n, k, dq)
        s["cos"], s["sin"] = rope_tables(tokens)
        return s

    def call_qk(backend, s, q, k, v, b, tokens, joint, offset, heads):
        nf = s["nf"] or {}
        a = s["a"]
        w = s["w"] if backend == 1 else None  # NF4: the packed weight only
        lib.check(lib.lib.fk_gemm_qk_norm_rope(
            backend, ptr(a), a.stride(0), ptr(w), w.stride(0) if w is not None else 0, ptr(nf.get("packed")),
            ptr(nf.get("absmax")), ptr(nf.get("absmax_q")), ptr(nf.get("absmax_code")), ptr(nf.get("nested_absmax")),
            ctypes.c_float(nf.get("nested_offset", 0.0)), ptr(s["bias"]), ptr(s["nq"]), ptr(s["nk"]), ptr(s["cos"]),
            ptr(s["sin"]), ptr(q), ptr(k), ptr(v), b * tokens, a.shape[1], heads, tokens, joint, offset,
            ctypes.c_float(qk_eps), sp), "fk_gemm_qk_norm_rope")

    def our_projection(backend, s, c):
        """The same projection by our GEMM with C stored (kNone): the same kernel's accumulator."""
        m, k = s["a"].shape
        if backend == 1:
            call_gemm(1, s["a"], s["w"], c, m, c.shape[1], k, "none", s["bias"], None, None, 1, 0, 0, 2)
        else:
            call_nf4(1, s["a"], s["nf"], c.shape[1], k, c, m, "none", s["bias"], None, None, 1, 0)

    def torch_qk_norm_rope(y, s, q, k, v, b, tokens, offset, heads):
        """diffusers' Flux attention after a fused projection y [b·tokens, 3·heads·128] (bf16): q and k RMS-normed
        over the head in float32, × the norm weight, interleaved RoPE (x·cos + rotate(x)·sin), rounded once; q, k, v
        written at rows offset + l of the joint [b, joint, heads, 128] tensors."""
        y = y.view(b, tokens, 3, heads, 128)
        x = y[:, :, :2].float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + qk_eps)
        x = x * torch.stack((s["nq"], s["nk"])).float().view(2, 1, 128)
        rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), -1).flatten(-2)
        x = (x * s["cos"].view(1, tokens, 1, 1, 128) + rotated * s["sin"].view(1, tokens, 1, 1, 128)).bfloat16()
        rows = slice(offset, offset + tokens)
        q[:, rows] = x[:, :, 0]
        k[:, rows] = x[:, :, 1]
        v[:, rows] = y[:, :, 2]

    def attn_tensors(b, h, lq, lkv, layout):
        def mk(l):
            if layout == "bhld":
                x = torch.randn(b, h, l, 128, device=dev).bfloat16()
                return x, (x.stride(0), x.stride(1), x.stride(2))
            x = torch.randn(b, l, h, 128, device=dev).bfloat16()  # [B, L, H, D] viewed as [B, H, L, D]
            return x.transpose(1, 2), (x.stride(0), x.stride(2), x.stride(1))
        q, qs = mk(lq)
        k, ks = mk(lkv)
        v, vs = mk(lkv)
        o, os_ = mk(lq)
        return q, k, v, o, list(qs) + list(ks) + list(vs) + list(os_)

    def call_attn(backend, q, k, v, o, b, h, lq, lkv, strides):
        arr = (ctypes.c_longlong * 12)(*strides)
        lib.check(lib.lib.fk_attention(backend, ptr(q), ptr(k), ptr(v), ptr(o), b, h, lq, lkv, arr,
                                       ctypes.c_float(0.0), sp), "fk_attention")

    def attn_ref(q, k, v):
        outs = []
        scale = 1.0 / math.sqrt(128)
        for i in range(q.shape[0]):
            for j0 in range(0, q.shape[1], 4):
                qq, kk, vv = (x[i, j0:j0 + 4].float() for x in (q, k, v))
                p = torch.softmax((qq @ kk.transpose(-1, -2)) * scale, dim=-1)
                outs.append((p @ vv).double())
        return torch.cat(outs, 0).reshape(q.shape)

    # ---- the tests ----
    sms = torch.cuda.get_device_properties(dev).multi_processor_count

    def split_as_expected(tc, r):
        """The split cases were chosen for 132 SMs: there, a launch that ran whole tiles fails the check."""
        r["split_bytes"] = int(lib.lib.fk_last_split_bytes())
        if tc.get("expect_split") and sms == 132 and r["split_bytes"] == 0:
            r["error"] = "ran whole tiles where the split was expected (132 SMs)"
            return False
        return True

    def run(tc):
        r = {"id": tc["id"]}
        torch.manual_seed(1000 + tc["id"])
        lib.lib.fk_set_split(tc.get("split", 1))
        op, mode = tc["op"], tc["mode"]
        if op == "gemm":
            m, n, k, epi, tile, backend = tc["m"], tc["n"], tc["k"], tc["epi"], tc["tile"], tc["backend"]
            rpb = max(1, m // 2)
            if mode == "check":
                a = torch.randn(m, k, device=dev).bfloat16()
                w = (torch.randn(n, k, device=dev) / math.sqrt(k)).bfloat16()
                bias, res, gate = epi_inputs(m, n, epi, rpb)
                c = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
                poison(c)
                call_gemm(backend, a, w, c, m, n, k, epi, bias, res, gate, rpb, tile, tc.get("cl", 0), tc.get("sched", 0))
                torch.cuda.synchronize()
                ref = epi_ref(ref_matmul(a, w), bias, res, gate, epi, rpb)
                r["err"] = nerr(c, ref)
                if epi == "none":
                    r["torch_err"] = nerr(F.linear(a, w, bias), ref)
                r["ok"] = bool(r["err"] <= 1e-2) and split_as_expected(tc, r)
            else:
                n_rot = rotations(2 * (m * k + n * k + m * n))
                sets = []
                for _ in range(n_rot):
                    a = torch.randn(m, k, device=dev).bfloat16()
                    w = (torch.randn(n, k, device=dev) / math.sqrt(k)).bfloat16()
                    bias, res, gate = epi_inputs(m, n, epi, rpb)
                    sets.append((a, w, torch.empty(m, n, device=dev, dtype=torch.bfloat16), bias, res, gate))
                flops = 2.0 * m * n * k
                skinny = m <= 16
                ref_fn = (lambda i: F.linear(sets[i][0], sets[i][1])) if skinny else \
                    (lambda i: torch.matmul(sets[i][0], sets[i][1].t(), out=sets[i][2]))
                mine, ref = timepair(lambda i: call_gemm(backend, sets[i][0], sets[i][1], sets[i][2], m, n, k, epi,
                                                         sets[i][3], sets[i][4], sets[i][5], rpb, tile, tc.get("cl", 0),
                                                         tc.get("sched", 0)),
                                     ref_fn, n_rot)
                r.update(ms=mine["ms"], torch_ms=ref["ms"], tflops=flops / mine["ms"] / 1e9,
                         torch_tflops=flops / ref["ms"] / 1e9, ratio=ref["ms"] / mine["ms"], detail=mine)
                if skinny:  # memory bound: bytes of weight, x and out
                    nbytes = 2 * (n * k + m * k + m * n)
                    r.update(gbps=nbytes / mine["ms"] / 1e6, torch_gbps=nbytes / ref["ms"] / 1e6)
                r["ok"] = True
        elif op == "nf4":
            m, n, k, epi, tile, backend, dq = (tc["m"], tc["n"], tc["k"], tc["epi"], tc["tile"], tc["backend"],
                                               tc["dq"])
            rpb = max(1, m // 2)
            if mode == "check":
                q, w_deq = make_nf4(n, k, dq)
                a = torch.randn(m, k, device=dev).bfloat16()
                bias, res, gate = epi_inputs(m, n, epi, rpb)
                c = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
                poison(c)
                call_nf4(backend, a, q, n, k, c, m, epi, bias, res, gate, rpb, tile, tc.get("cl", 0))
                torch.cuda.synchronize()
                ref = epi_ref(ref_matmul(a, w_deq), bias, res, gate, epi, rpb)
                r["err"] = nerr(c, ref)
                if epi == "none":
                    r["torch_err"] = nerr(F.linear(a, w_deq, bias), ref)
                r["ok"] = bool(r["err"] <= 1e-2) and split_as_expected(tc, r)
            else:
                q, w_deq = make_nf4(n, k, dq)
                wbytes = n * k // 2 + (n * k // 64) * (1 if dq else 4)
                n_rot = rotations(wbytes + 2 * m * (k + n))
                sets = []
                for _ in range(n_rot):
                    qq, wd = make_nf4(n, k, dq)
                    a = torch.randn(m, k, device=dev).bfloat16()
                    sets.append((a, qq, wd, torch.empty(m, n, device=dev, dtype=torch.bfloat16)))
                flops = 2.0 * m * n * k
                # torch has no NF4 kernel here: its yardstick is the bf16 (dequantized) weight, F.linear for the
                # skinny shapes; its GB/s counts the bf16 bytes it reads
                ref_fn = (lambda i: F.linear(sets[i][0], sets[i][2])) if m <= 16 else \
                    (lambda i: torch.matmul(sets[i][0], sets[i][2].t(), out=sets[i][3]))
                mine, ref = timepair(lambda i: call_nf4(backend, sets[i][0], sets[i][1], n, k, sets[i][3], m, "none",
                                                        None, None, None, 1, tile, tc.get("cl", 0)),
                                     ref_fn, n_rot)
                r.update(ms=mine["ms"], torch_ms=ref["ms"], tflops=flops / mine["ms"] / 1e9,
                         torch_tflops=flops / ref["ms"] / 1e9, ratio=ref["ms"] / mine["ms"],
                         gbps=(wbytes + 2 * m * (k + n)) / mine["ms"] / 1e6,
                         torch_gbps=2 * (n * k + m * (k + n)) / ref["ms"] / 1e6, detail=mine)
                r["ok"] = True
        elif op == "nf4pair":
            # gemm_nf4_sm90_pair: two products of the same N, K and epilogue (the double blocks' image and text
            # streams) in one launch, against each on gemm_nf4_sm90 alone (the same values up to the float32 order
            # of the split last round: within one bf16 step of the largest value) and the dequantized reference;
            # timed against the two launched one after the other and torch's two matmuls.
            ms_, n, k, epi = tc["ms"], tc["n"], tc["k"], tc["epi"]
            rpbs = [max(1, m // 2) for m in ms_]
            made = [make_nf4(n, k, tc["dq"] and i == 1) for i in range(2)]
            xs = [torch.randn(m, k, device=dev).bfloat16() for m in ms_]
            eps = [epi_inputs(m, n, epi, rpb) for m, rpb in zip(ms_, rpbs)]
            outs = [torch.empty(m, n, device=dev, dtype=torch.bfloat16) for m in ms_]
            alone = [torch.empty(m, n, device=dev, dtype=torch.bfloat16) for m in ms_]

            def pair(_):
                for i, backend in enumerate((4, 5)):
                    call_nf4(backend, xs[i], made[i][0], n, k, outs[i], ms_[i], epi, *eps[i], rpbs[i], 0)

            def separate(_):
                for i in range(2):
                    call_nf4(1, xs[i], made[i][0], n, k, alone[i], ms_[i], epi, *eps[i], rpbs[i], 0)
            if mode == "check":
                for o in outs:
                    poison(o)
                pair(0)
                separate(0)
                torch.cuda.synchronize()
                refs = [epi_ref(ref_matmul(x, wd), *e, epi, rpb) for x, (_, wd), e, rpb in zip(xs, made, eps, rpbs)]
                r["err"] = max(nerr(o, ref) for o, ref in zip(outs, refs))
                r["max_rel_to_alone"] = max(float((o.float() - a.float()).abs().max() / a.float().abs().max())
                                            for o, a in zip(outs, alone))
                r["ok"] = bool(r["err"] <= 1e-2) and r["max_rel_to_alone"] <= 2 ** -7
            else:
                wd = [wdq for _, wdq in made]
                mine, sep = timepair(pair, separate, 1)
                ref = timeit(lambda _: [torch.matmul(x, w.t()) for x, w in zip(xs, wd)], 1)
                flops = 2.0 * sum(ms_) * n * k
                r.update(ms=mine["ms"], separate_ms=sep["ms"], torch_ms=ref["ms"], tflops=flops / mine["ms"] / 1e9,
                         torch_tflops=flops / ref["ms"] / 1e9, ratio=ref["ms"] / mine["ms"], detail=mine)
                r["ok"] = True
        elif op == "nf4cat":
            # gemv_nf4_concat: parts side by side in one output, against each part on gemv_nf4 (bitwise) and the
            # dequantized reference; timed against the same parts launched one by one and torch's F.linear on the
            # bf16 weights stacked into one matrix (its best case: one launch).
            m, k, ns = tc["m"], tc["k"], tc["ns"]
            total = sum(ns)
            if mode == "check":
                made = [make_nf4(n, k, (i + m) % 3 == 0) for i, n in enumerate(ns)]
                qs = [q for q, _ in made]
                biases = [None if i % 4 == 3 else (torch.randn(n, device=dev) * 0.5).bfloat16() for i, n in enumerate(ns)]
                a = torch.randn(m, k, device=dev).bfloat16()
                c = torch.empty(m, total, device=dev, dtype=torch.bfloat16)
                poison(c)
                call_nf4cat(a, c, m, k, nf4cat_args(qs, ns, biases))
                sep = torch.empty(m, total, device=dev, dtype=torch.bfloat16)
                col = 0
                for q, n, b in zip(qs, ns, biases):
                    call_nf4(3, a, q, n, k, sep[:, col:], m, "none" if b is not None else "nobias", b, None, None, 1, 0)
                    col += n
                torch.cuda.synchronize()
                ref = torch.cat([epi_ref(ref_matmul(a, wd), b, None, None, "none", 1) for (_, wd), b in zip(made, biases)], 1)
                r["err"] = nerr(c, ref)
                r["bitwise_separate"] = bool(torch.equal(c, sep))
                r["ok"] = bool(r["err"] <= 1e-2) and r["bitwise_separate"]
            else:
                qs = [make_nf4(n, k, False)[0] for n in ns]
                biases = [(torch.randn(n, device=dev) * 0.5).bfloat16() for n in ns]
                args = nf4cat_args(qs, ns, biases)
                a = torch.randn(m, k, device=dev).bfloat16()
                c = torch.empty(m, total, device=dev, dtype=torch.bfloat16)
                w_bf16 = (torch.randn(total, k, device=dev) * 0.05).bfloat16()
                b_all = torch.cat(biases)

                def separate(_):
                    col = 0
                    for q, n, b in zip(qs, ns, biases):
                        call_nf4(3, a, q, n, k, c[:, col:], m, "none", b, None, None, 1, 0)
                        col += n
                mine, sep = timepair(lambda _: call_nf4cat(a, c, m, k, args), separate, 1)
                ref = timeit(lambda _: F.linear(a, w_bf16, b_all), 1)
                wbytes = total * k // 2 + (total * k // 64) * 4
                r.update(ms=mine["ms"], separate_ms=sep["ms"], torch_ms=ref["ms"], ratio=ref["ms"] / mine["ms"],
                         gbps=wbytes / mine["ms"] / 1e6, separate_gbps=wbytes / sep["ms"] / 1e6,
                         torch_gbps=2 * total * k / ref["ms"] / 1e6, detail=mine)
                r["ok"] = True
        elif op == "attn":
            b, h, lq, lkv, layout, backend = tc["b"], tc["h"], tc["lq"], tc["lkv"], tc["layout"], tc["backend"]
            if mode == "check":
                q, k, v, o, strides = attn_tensors(b, h, lq, lkv, layout)
                poison(o)
                call_attn(backend, q, k, v, o, b, h, lq, lkv, strides)
                torch.cuda.synchronize()
                ref = attn_ref(q, k, v)
                r["err"] = nerr(o, ref)
                r["torch_err"] = nerr(F.scaled_dot_product_attention(q, k, v), ref)
                r["ok"] = bool(r["err"] <= 1e-2) and split_as_expected(tc, r)
            else:
                n_rot = rotations(2 * 128 * b * h * (2 * lq + 2 * lkv))
                sets = [attn_tensors(b, h, lq, lkv, layout) for _ in range(n_rot)]
                flops = 4.0 * b * h * lq * lkv * 128
                mine, ref = timepair(lambda i: call_attn(backend, *sets[i][:4], b, h, lq, lkv, sets[i][4]),
                                     lambda i: F.scaled_dot_product_attention(*sets[i][:3]), n_rot)
                r.update(ms=mine["ms"], torch_ms=ref["ms"], tflops=flops / mine["ms"] / 1e9,
                         torch_tflops=flops / ref["ms"] / 1e9, ratio=ref["ms"] / mine["ms"], detail=mine)
                try:
                    from torch.nn.attention import SDPBackend, sdpa_kernel
                    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                        try:
                            with sdpa_kernel(be):
                                t2 = timeit(lambda i: F.scaled_dot_product_attention(*sets[i][:3]), n_rot)
                            r[f"torch_{name}_tflops"] = flops / t2["ms"] / 1e9
                        except Exception as e:  # backend unavailable for this shape/build
                            r[f"torch_{name}_tflops"] = None
                            r[f"torch_{name}_error"] = str(e)[:200]
                except ImportError:
                    pass
                r["ok"] = True
        elif op == "qkrope":
            backend, b, joint, heads, kd, dq = tc["backend"], tc["b"], tc["joint"], tc["heads"], tc["k"], tc["dq"]
            n = 3 * heads * 128

            def joint_tensors():
                return [torch.empty(b, joint, heads, 128, device=dev, dtype=torch.bfloat16) for _ in range(3)]
            if mode == "check":
                outs = joint_tensors()
                for o in outs:
                    poison(o)
                streams = [(qk_stream(b, tokens, heads, kd, backend, dq), tokens, off) for tokens, off in tc["streams"]]
                for s, tokens, off in streams:
                    call_qk(backend, s, *outs, b, tokens, joint, off, heads)
                torch.cuda.synchronize()
                # ref: torch's ops on the float32 linear rounded to bf16 (as stored); torch: on cuBLAS's bf16 linear
                # (the noise a different summation order makes); own: on our GEMM's stored projection (the kernel's
                # claim: bitwise the stored projection + joint_qkv, so only float32 rounding differs from torch's ops)
                ref, tor, own = joint_tensors(), joint_tensors(), joint_tensors()
                covered = torch.zeros(b, joint, dtype=torch.bool, device=dev)
                for s, tokens, off in streams:
                    y = F.linear(s["a"].float(), s["w"].float(), s["bias"].float()).bfloat16()
                    torch_qk_norm_rope(y, s, *ref, b, tokens, off, heads)
                    torch_qk_norm_rope(F.linear(s["a"], s["w"], s["bias"]), s, *tor, b, tokens, off, heads)
                    c = torch.empty(b * tokens, n, device=dev, dtype=torch.bfloat16)
                    poison(c)
                    our_projection(backend, s, c)
                    torch_qk_norm_rope(c, s, *own, b, tokens, off, heads)
                    covered[:, off:off + tokens] = True
                torch.cuda.synchronize()

                def rows(ts):
                    return torch.cat([t[covered].flatten() for t in ts])
                r["err"] = nerr(rows(outs), rows(ref))
                r["torch_err"] = nerr(rows(tor), rows(ref))
                r["proj_err"] = nerr(rows(outs[:2]), rows(own[:2]))
                r["v_bitwise"] = bool(torch.equal(outs[2][covered].view(torch.int16), own[2][covered].view(torch.int16)))
                r["untouched"] = all(bool((o[~covered].view(torch.int16) == -1).all()) for o in outs)
                r["note"] = (f"q/k vs torch's ops on our stored projection {r['proj_err']:.2e}, v bitwise "
                             f"{r['v_bitwise']}, rows of other streams untouched {r['untouched']}")
                r["ok"] = bool(r["err"] <= 1e-2 and r["proj_err"] <= 1e-3 and r["v_bitwise"] and r["untouched"])
            else:
                (tokens, off), = tc["streams"]
                m = b * tokens
                wbytes = 2 * n * kd if backend == 1 else n * kd // 2 + (n * kd // 64) * (1 if dq else 4)
                n_rot = rotations(wbytes + 2 * m * kd + 2 * m * n)
                sets = []
                for _ in range(n_rot):
                    s = qk_stream(b, tokens, heads, kd, backend, dq)
                    s["out"] = joint_tensors()
                    s["c"] = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
                    sets.append(s)
                flops = 2.0 * m * n * kd
                # torch: F.linear (NF4: on the dequantized bf16 weight, as for the plain NF4 rows), the norm and rope
                # ops in float32 and the writes of q, k, v into the joint tensors
                mine, ref = timepair(
                    lambda i: call_qk(backend, sets[i], *sets[i]["out"], b, tokens, joint, off, heads),
                    lambda i: torch_qk_norm_rope(F.linear(sets[i]["a"], sets[i]["w"], sets[i]["bias"]), sets[i],
                                                 *sets[i]["out"], b, tokens, off, heads), n_rot)
                plain = timeit(lambda i: our_projection(backend, sets[i], sets[i]["c"]), n_rot)
                r.update(ms=mine["ms"], torch_ms=ref["ms"], tflops=flops / mine["ms"] / 1e9,
                         torch_tflops=flops / ref["ms"] / 1e9, ratio=ref["ms"] / mine["ms"], plain_ms=plain["ms"],
                         detail=mine, note=f"the projection alone by our GEMM (C stored, no norm/rope): "
                                           f"{plain['ms']:.4f} ms")
                r["ok"] = True
        elif op == "gemm2":
            m, n, k1, k2, epi = tc["m"], tc["n"], tc["k1"], tc["k2"], tc["epi"]
            k = k1 + k2
            rpb = max(1, m // 2)

            def two_part_inputs(padded):
                # checks: each part a view into a wider buffer (lda, lda2 not the parts' widths; a2 not at its start)
                p1, p2, o2 = (64, 136, 8) if padded else (0, 0, 0)
                a1 = torch.randn(m, k1 + p1, device=dev).bfloat16()[:, :k1]
                a2 = torch.randn(m, k2 + p2, device=dev).bfloat16()[:, o2:o2 + k2]
                w = (torch.randn(n, k, device=dev) / math.sqrt(k)).bfloat16()
                return (a1, a2, w) + tuple(epi_inputs(m, n, epi, rpb))
            if mode in ("check", "refuse"):
                a1, a2, w, bias, res, gate = two_part_inputs(True)
                c = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
                poison(c)
                code = call_gemm2(a1, a2, k1, w, c, m, n, k, epi, bias, res, gate, rpb)
                torch.cuda.synchronize()
                if mode == "refuse":
                    untouched = bool((c.view(torch.int16) == -1).all())
                    r["code"] = code
                    r["note"] = f"returned {lib.lib.fk_error_string(code).decode()} ({code}), C untouched {untouched}"
                    r["ok"] = code == 1 and untouched  # cudaErrorInvalidValue
                else:
                    lib.check(code, "fk_gemm_bf16_two_part")
                    cat = torch.cat([a1, a2], 1)
                    c_cat = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
                    poison(c_cat)
                    call_gemm(1, cat, w, c_cat, m, n, k, epi, bias, res, gate, rpb, 0, 0, 2)
                    torch.cuda.synchronize()
                    ref = epi_ref(ref_matmul(cat, w), bias, res, gate, epi, rpb)
                    r["err"] = nerr(c, ref)
                    r["torch_err"] = nerr(torch_epi(F.linear(cat, w, bias), res, gate, epi, rpb), ref)
                    r["bitwise"] = bool(torch.equal(c.view(torch.int16), c_cat.view(torch.int16)))
                    r["note"] = f"bitwise the ping-pong GEMM on the concatenated A: {r['bitwise']}"
                    r["ok"] = bool(r["err"] <= 1e-2 and r["bitwise"])
            else:
                n_rot = rotations(2 * (m * k + n * k + 2 * m * n))
                sets = []
                for _ in range(n_rot):
                    a1, a2, w, bias, res, gate = two_part_inputs(False)
                    sets.append((a1, a2, w, bias, res, gate, torch.empty(m, n, device=dev, dtype=torch.bfloat16),
                                 torch.cat([a1, a2], 1)))
                flops = 2.0 * m * n * k

                def mine_fn(i):
                    a1, a2, w, bias, res, gate, c, _ = sets[i]
                    lib.check(call_gemm2(a1, a2, k1, w, c, m, n, k, epi, bias, res, gate, rpb),
                              "fk_gemm_bf16_two_part")

                def torch_fn(i):
                    a1, a2, w, bias, res, gate, c, _ = sets[i]
                    torch_epi(F.linear(torch.cat([a1, a2], 1), w, bias), res, gate, epi, rpb, out=c)

                def concat_fn(i):
                    _, _, w, bias, res, gate, c, cat = sets[i]
                    call_gemm(1, cat, w, c, m, n, k, epi, bias, res, gate, rpb, 0, 0, 2)
                mine, ref = timepair(mine_fn, torch_fn, n_rot)
                mine2, pre = timepair(mine_fn, concat_fn, n_rot)
                r.update(ms=mine["ms"], torch_ms=ref["ms"], tflops=flops / mine["ms"] / 1e9,
                         torch_tflops=flops / ref["ms"] / 1e9, ratio=ref["ms"] / mine["ms"], concat_ms=pre["ms"],
                         concat_ratio=pre["ms"] / mine2["ms"], detail=mine,
                         note=f"our ping-pong GEMM on a pre-concatenated A: {pre['ms']:.4f} ms against "
                              f"{mine2['ms']:.4f} (ratio {pre['ms'] / mine2['ms']:.3f}, same rounds)")
                r["ok"] = True
        elif op == "copy":
            x = torch.empty(1 << 28, device=dev, dtype=torch.uint8)
            y = torch.empty_like(x)
            t = timeit(lambda i: y.copy_(x), 1)
            r.update(ms=t["ms"], gbps=2 * x.numel() / t["ms"] / 1e6, ok=True)
        return r

    emit({"device": torch.cuda.get_device_name(0), "torch": torch.__version__})
    if profile:
        # One launch of each headline kernel, for `ncu` (no timing loops, no torch baselines).
        m, n, k = 4608, 12288, 3072
        a = torch.randn(m, k, device=dev).bfloat16()
        w = (torch.randn(n, k, device=dev) / math.sqrt(k)).bfloat16()
        c = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
        call_gemm(1, a, w, c, m, n, k, "none", None, None, None, 1, 0)
        call_gemm(1, a, w, c, m, n, k, "none", None, None, None, 1, 256, 1, 1)
        call_gemm(1, a, w, c, m, n, k, "none", None, None, None, 1, 256, 2, 1)
        call_gemm(1, a, w, c, m, n, k, "none", None, None, None, 1, 0, 2, 2)
        # The gate/residual shape where pairs lost most (bench/kernels/ab.py): 4096x12288x3072, independent then pairs.
        a2 = torch.randn(4096, 12288, device=dev).bfloat16()
        w2 = (torch.randn(3072, 12288, device=dev) / math.sqrt(12288)).bfloat16()
        c2 = torch.randn(4096, 3072, device=dev).bfloat16()
        b2, g2 = torch.randn(3072, device=dev).bfloat16(), torch.randn(1, 3072, device=dev).bfloat16()
        for cl in (1, 2):
            call_gemm(1, a2, w2, c2, 4096, 3072, 12288, "gate", b2, c2, g2, 4096, 0, cl, 2)
        torch.matmul(a, w.t(), out=c)
        q, _ = make_nf4(n, k, False)
        call_nf4(1, a, q, n, k, c, m, "none", None, None, None, 1, 0)
        # The skinny NF4 path at the modulation size, M = 1 [18432, 3072].
        q1, _ = make_nf4(18432, k, False)
        x1, c1 = a[:1], torch.empty(1, 18432, device=dev, dtype=torch.bfloat16)
        call_nf4(3, x1, q1, 18432, k, c1, 1, "none", None, None, None, 1, 0)
        for backend in (3, 4):
            qq, kk, vv, oo, strides = attn_tensors(1, 24, 4608, 4608, "bhld")
            call_attn(backend, qq, kk, vv, oo, 1, 24, 4608, 4608, strides)
        torch.cuda.synchronize()
        out.close()
        return
    for tc in tests[start:]:
        if family(tc) in skip_families:
            emit({"id": tc["id"], "ok": False, "error": "skipped: this kernel family hung earlier in the run"})
            continue
        emit({"begin": tc["id"]})
        try:
            res = run(tc)
        except Exception as e:
            res = {"id": tc["id"], "ok": False, "error": f"{type(e).__name__}: {e}"[:500],
                   "trace": traceback.format_exc()[-1500:]}
            emit(res)
            try:  # a sticky CUDA error poisons the context: let the parent start a fresh worker
                torch.cuda.synchronize()
                torch.ones(1, device=dev).add_(1).item()
            except Exception:
                emit({"sticky": tc["id"]})
                out.close()
                os._exit(3)
            continue
        emit(res)
    out.close()


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------
def describe(tc):
    if tc["op"] == "gemm":
        be = {0: "auto", 1: "sm90", 2: "sm80", 3: "gemv"}[tc["backend"]]
        tile = f" tile_n={tc['tile']}" if tc["tile"] else ""
        cl = f" cl={tc['cl']}" if tc.get("cl") else ""
        sched = {0: "", 1: " coop", 2: " pingpong", 3: " wide"}[tc.get("sched", 0)]
        whole = " whole-tiles" if tc.get("split", 1) == 0 else ""
        return f"gemm_bf16[{be}{tile}{cl}{sched}{whole}] {tc['epi']}", f"M{tc['m']} N{tc['n']} K{tc['k']}"
    if tc["op"] == "nf4":
        be = {0: "auto", 1: "sm90", 2: "sm80", 3: "gemv"}[tc["backend"]]
        tile = f" tile_m={tc['tile']}" if tc["tile"] else ""
        dq = " dq" if tc["dq"] else ""
        cl = f" cl={tc['cl']}" if tc.get("cl") else ""
        whole = " whole-tiles" if tc.get("split", 1) == 0 else ""
        return f"gemm_nf4[{be}{tile}{cl}{dq}{whole}] {tc['epi']}", f"M{tc['m']} N{tc['n']} K{tc['k']}"
    if tc["op"] == "qkrope":
        be = {1: "bf16 sm90", 2: "nf4 sm90"}[tc["backend"]]
        dq = " dq" if tc["dq"] else ""
        streams = "+".join(f"{tokens}@{off}" for tokens, off in tc["streams"])
        return f"gemm_qk_norm_rope[{be}{dq}]", f"B{tc['b']} L{streams}/{tc['joint']} H{tc['heads']} K{tc['k']}"
    if tc["op"] == "gemm2":
        return f"gemm_bf16[sm90 two-part A] {tc['epi']}", f"M{tc['m']} N{tc['n']} K{tc['k1']}+{tc['k2']}"
    if tc["op"] == "nf4pair":
        dq = " dq" if tc["dq"] else ""
        return f"gemm_nf4_sm90_pair[{dq.strip() or 'plain'}] {tc['epi']}", f"M{tc['ms'][0]}+{tc['ms'][1]} N{tc['n']} K{tc['k']}"
    if tc["op"] == "nf4cat":
        shape = f"M{tc['m']} N{len(tc['ns'])}x(sum {sum(tc['ns'])}) K{tc['k']}"
        return "gemv_nf4_concat", shape
    if tc["op"] == "attn":
        be = {1: "sm90 pipelined", 2: "sm80", 3: "sm90 simple", 4: "sm90 pingpong"}[tc["backend"]]
        whole = " whole-units" if tc.get("split", 1) == 0 else ""
        return f"attention[{be}{whole}] {tc['layout']}", f"B{tc['b']} H{tc['h']} Lq{tc['lq']} Lkv{tc['lkv']}"
    return "device copy (torch)", "256 MiB"


def table(tests, results):
    lines = []
    hdr = f"{'kernel':<40} {'shape':<28} {'status':<6} {'err':>9} {'torch err':>9} {'ms':>8} {'TFLOP/s':>8} " \
          f"{'torch':>8} {'ratio':>6} {'GB/s':>7} {'torch GB/s':>10}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for tc in tests:
        r = results.get(tc["id"], {"ok": False, "error": "not run"})
        name, shape = describe(tc)
        status = "ok" if r.get("ok") else "FAIL"

        def f(key, fmt):
            v = r.get(key)
            return format(v, fmt) if isinstance(v, (int, float)) and v == v else "-"
        if r.get("err") is not None and r.get("err") != r.get("err"):
            errs = "NaN"
        else:
            errs = f("err", ".2e")
        lines.append(f"{name:<40} {shape:<28} {status:<6} {errs:>9} {f('torch_err', '.2e'):>9} {f('ms', '.4f'):>8} "
                     f"{f('tflops', '.1f'):>8} {f('torch_tflops', '.1f'):>8} {f('ratio', '.3f'):>6} "
                     f"{f('gbps', '.0f'):>7} {f('torch_gbps', '.0f'):>10}")
        if not r.get("ok") and r.get("error"):
            lines.append(f"    -> {r['error'][:300]}")
        if r.get("note"):
            lines.append(f"    .. {r['note']}")
        if r.get("separate_ms") is not None and r.get("separate_gbps") is not None:
            lines.append(f"    .. the same parts launched one by one: {r['separate_ms']:.4f} ms, {r['separate_gbps']:.0f} GB/s")
        elif r.get("separate_ms") is not None:
            lines.append(f"    .. the two launched one after the other: {r['separate_ms']:.4f} ms")
        if r.get("max_rel_to_alone") is not None:
            lines.append(f"    .. against each launched alone: max difference {r['max_rel_to_alone']:.2e} of the largest value")
    return "\n".join(lines)


def sass_stats(lib_path, out_dir):
    """Per kernel: wgmma (HGMMA) and mma.sync (HMMA) counts, local-memory traffic, 16-byte loads."""
    try:
        sass = subprocess.run(["cuobjdump", "-sass", lib_path], capture_output=True, text=True, timeout=120).stdout
    except Exception as e:
        return f"cuobjdump unavailable: {e}"
    rows, fn, counts = [], None, None
    keys = ["HGMMA", "HMMA", "LDL", "STL", "LDG.E.128", "LDS.128", "UTMALDG", "SYNCS", "LDSM", "MUFU.EX2"]

    def flush():
        if fn is not None:
            rows.append(f"{fn[:110]:<110} " + " ".join(f"{k}={counts[k]}" for k in keys))
    for line in sass.splitlines():
        s = line.strip()
        if s.startswith("Function :"):
            flush()
            fn, counts = s.split(":", 1)[1].strip(), {k: 0 for k in keys}
        elif fn is not None and "/*" in s:
            for k in keys:
                if k in s:
                    counts[k] += 1
    flush()
    text = "\n".join(rows)
    with open(os.path.join(out_dir, "sass.txt"), "w") as fh:
        fh.write(text + "\n")
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "out"))
    ap.add_argument("--lib", default=LIB)
    ap.add_argument("--only", default="", help="run tests whose name contains one of these |-separated strings")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timeout", type=float, default=25.0, help="seconds per test before the worker is killed")
    ap.add_argument("--budget", type=float, default=0.0, help="stop starting tests after this many seconds")
    ap.add_argument("--skip-families", default="")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--profile", action="store_true", help="launch each headline kernel once (run under ncu)")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--results", default="")
    args = ap.parse_args()
    tests = build_tests(args.quick)
    if args.only:
        tests = [t for t in tests if any(o in " ".join(describe(t)) + f" {t['mode']}" for o in args.only.split("|"))]
    if args.worker or args.profile:
        worker(tests, args.start, args.results or os.devnull, args.lib,
               set(filter(None, args.skip_families.split(","))), args.profile)
        return

    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.jsonl")
    open(results_path, "w").close()
    if not os.environ.get("FLUXK_BENCH_SELFTEST"):
        print(sass_stats(args.lib, args.out), flush=True)
    results = {}
    info = {}
    hangs = {}
    pos = 0
    t_start = time.time()
    while pos < len(tests):
        skip = ",".join(f for f, n in hangs.items() if n >= 2)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--start", str(pos), "--results", results_path,
               "--lib", args.lib, "--skip-families", skip] + (["--quick"] if args.quick else []) + \
              (["--only", args.only] if args.only else [])
        proc = subprocess.Popen(cmd)
        current, last_progress, seen, rc = None, time.time(), 0, None
        out_of_time = False
        while True:
            time.sleep(0.2)
            with open(results_path) as fh:
                lines = [ln for ln in fh.readlines() if ln.endswith("\n")]
            for ln in lines[seen:]:
                obj = json.loads(ln)
                if "device" in obj:
                    info.update(obj)
                elif "sticky" in obj:
                    tc = next(t for t in tests if t["id"] == obj["sticky"])
                    hangs[family(tc)] = hangs.get(family(tc), 0) + 1
                elif "begin" in obj:
                    current = obj["begin"]
                    tc = next(t for t in tests if t["id"] == current)
                    print(f"[{time.time() - t_start:6.1f}s] {' '.join(describe(tc))} {tc['mode']}", flush=True)
                    if args.budget and time.time() - t_start > args.budget:
                        out_of_time = True
                else:
                    results[obj["id"]] = obj
                    if not obj.get("ok"):
                        print(f"    FAIL: {obj.get('error', obj.get('err'))}", flush=True)
                    current = None
                last_progress = time.time()
            seen = len(lines)
            rc = proc.poll()
            if rc is not None:
                break
            if out_of_time:
                proc.kill()
                proc.wait()
                break
            if current is not None and time.time() - last_progress > args.timeout:
                proc.kill()
                proc.wait()
                rc = -9
                break
        if seen == 0:
            print(f"worker failed to start (rc={rc}); giving up", flush=True)
            break
        if rc == 0 or out_of_time:
            if out_of_time:
                print(f"budget of {args.budget:.0f} s spent: remaining tests not run", flush=True)
            break
        # The worker died or hung: the test in progress (if any) failed; continue after it. A kernel
        # family that killed the worker twice is skipped from then on (each restart costs seconds).
        if current is not None and current not in results:
            tc = next(t for t in tests if t["id"] == current)
            hangs[family(tc)] = hangs.get(family(tc), 0) + 1
            results[current] = {"id": current, "ok": False,
                                "error": "worker killed (timeout/hang)" if rc == -9 else f"worker crashed (rc={rc})"}
            with open(results_path, "a") as fh:
                fh.write(json.dumps(results[current]) + "\n")
        nxt = [i for i, t in enumerate(tests) if t["id"] not in results]
        if not nxt:
            break
        pos = nxt[0]

    summary = {"tests": tests, "results": [results.get(t["id"], {"id": t["id"], "ok": False, "error": "not run"})
                                           for t in tests]}
    summary.update(info)
    summary["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    text = table(tests, results)
    with open(os.path.join(args.out, "table.txt"), "w") as fh:
        fh.write(text + "\n")
    n_ok = sum(1 for t in tests if results.get(t["id"], {}).get("ok"))
    print("\n" + text)
    print(f"\n{n_ok}/{len(tests)} ok, {time.time() - t_start:.0f} s, device: {summary.get('device', '?')}")


if __name__ == "__main__":
    main()
