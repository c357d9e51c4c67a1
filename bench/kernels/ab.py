"""Interleaved A/B timing of GEMM variants (and of two builds of the library) under sustained load, with each
variant's clock and power.

Why: under sustained load the H100 sits at its 700 W limit and its SM clock wanders (1.1-2.0 GHz), so two variants
timed one after the other differ by ±5% for nothing (bench.py's pairs), and a kernel's speed there depends on the
energy it spends per FLOP as much as on its latency hiding. Here every variant of a shape runs in turn, many rounds of
back-to-back calls over rotating inputs, and the median per-call time of each decides; torch's matmul (cuBLAS, no
epilogue) runs in the same rotation as the yardstick. nvidia-smi samples the SM clock and the board power every
50 ms; each sample is credited to the variant that was running (indicative only: samples lag and rounds are short, so
the same kernel's clock differed by 20% between runs at the same TFLOP/s).

Usage: python3 bench/kernels/ab.py [--rounds 8] [--round-ms 150] [--variants pp,pp-cl2] [--shapes step|M,K,N,epi;...]
                                   [--lib-b OTHER.so]
Epilogues: none, gelu, gate, and qk (the QKV projection with QK-norm + RoPE into q, k, v: "pp", "pp-cl2", "nf4").
Variants: "pp" ping-pong 128x128 tiles, "pp-cl2" the same in 2-CTA clusters (W multicast), "pp-192" / "pp-192-cl2"
128x192 tiles, "pp-auto" the dispatch's tiles and clusters, "wide" / "wide-cl2" the cooperative 192x192 kernel,
"coop-256" cooperative 128x256,
"pp-whole" ping-pong without the split last round's workspace (whole tiles only; split_k.cuh), "nf4" the sm90 NF4
kernel (random codes and absmax, its own tile and split choice), "nf4-128" / "-192" / "-256" with that token tile. With --lib-b every variant also runs from that
library, as "<variant>@b" (an old build against a new one, in the same rotation).
"""
import argparse
import ctypes
import datetime
import math
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import EPI, Lib  # noqa: E402

# (schedule, tile_n, cluster) as GemmArgs takes them (0: the dispatch's), and whether the split workspace is given
# (capi.cu fk_set_split).
VARIANTS = {"pp": (2, 128, 1, 1), "pp-cl2": (2, 128, 2, 1), "pp-192": (2, 192, 1, 1), "pp-192-cl2": (2, 192, 2, 1),
            "pp-auto": (2, 0, 0, 1), "wide": (3, 0, 1, 1), "wide-cl2": (3, 0, 2, 1), "coop-256": (1, 256, 1, 1),
            "pp-whole": (2, 128, 1, 0)}
QK_BACKENDS = {"pp": 4, "pp-cl2": 3, "pp-auto": 1, "nf4": 2}  # capi.cu's fk_gemm_qk_norm_rope
# The transformer step's GEMMs (M, K, N, epilogue): double blocks' image stream (4096) and text stream (512),
# single blocks (4608; proj_out timed on its concatenated A).
STEP_SHAPES = [(4608, 3072, 9216, "qk"), (4096, 3072, 9216, "qk"), (512, 3072, 9216, "qk"), (4608, 3072, 9216, "none"),
               (4608, 3072, 12288, "gelu"), (4608, 15360, 3072, "gate"), (4096, 3072, 9216, "none"),
               (4096, 3072, 3072, "gate"), (4096, 3072, 12288, "gelu"), (4096, 12288, 3072, "gate"),
               (512, 3072, 12288, "gelu"), (512, 12288, 3072, "gate")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(HERE, "build", "libfluxk.so"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--round-ms", type=float, default=150.0, help="GPU time per variant per round")
    ap.add_argument("--variants", default="pp,pp-cl2")
    ap.add_argument("--shapes", default="step", help="'step' or 'M,K,N,epi;...'")
    ap.add_argument("--lib-b", default="", help="a second build: each variant also runs from it as '<variant>@b'")
    args = ap.parse_args()
    import torch

    libs = {"": Lib(args.lib)}
    if args.lib_b:
        libs["@b"] = Lib(args.lib_b)
    dev = torch.device("cuda")
    stream = torch.cuda.Stream()
    torch.cuda.set_stream(stream)
    sp = ctypes.c_void_p(stream.cuda_stream)
    shapes = STEP_SHAPES if args.shapes == "step" else [
        (int(m), int(k), int(n), e) for m, k, n, e in (s.split(",") for s in args.shapes.split(";"))]
    variants = [v + suffix for v in args.variants.split(",") for suffix in libs]
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw", "--format=csv,noheader,nounits",
                            "-lms", "50"], stdout=subprocess.PIPE, text=True)
    windows = []  # (shape index, function index, host start, host end) of every timed round
    print(f"{torch.cuda.get_device_name(0)}: {args.rounds} rounds x ~{args.round_ms:.0f} ms per variant, interleaved; "
          "median ms per call", flush=True)
    print(f"{'M x K x N, epilogue':28s} " + " ".join(f"{v:>10s}" for v in variants + ["torch"]) + "  best/torch")
    medians = []
    for shape_index, (m, k, n, epi) in enumerate(shapes):
        flop = 2.0 * m * n * k
        sets_n = max(2, min(8, int(200e6 // ((m * k + n * k + 2 * m * n) * 2)) + 1))  # > 50 MB L2 in rotation
        sets = []
        for _ in range(sets_n):
            a = torch.randn(m, k, device=dev).bfloat16()
            w = (torch.randn(n, k, device=dev) / math.sqrt(k)).bfloat16()
            c = torch.empty(m, n, device=dev, dtype=torch.bfloat16)
            bias = torch.randn(n, device=dev).bfloat16()
            res = torch.randn(m, n, device=dev).bfloat16() if epi == "gate" else None
            gate = torch.randn(1, n, device=dev).bfloat16() if epi == "gate" else None
            sets.append((a, w, c, bias, res, gate))
        if any(v.startswith("nf4") for v in variants):  # random codes; absmax per 64 values as checkpoints have them
            nf4_sets = [((torch.randint(0, 256, (n * k // 2,), device=dev, dtype=torch.uint8)),
                         torch.rand(n * k // 64, device=dev) * 0.04 + 0.01) for _ in range(sets_n)]

        def split_name(name):
            base, _, suffix = name.partition("@")
            return base, libs["@" + suffix if suffix else ""]

        def gemm_variant(name):
            base, lib = split_name(name)
            if base.startswith("nf4"):
                tile = int(base[4:]) if base != "nf4" else 0

                def nf4_fn(i):
                    a, _, c, bias, res, gate = sets[i % sets_n]
                    packed, absmax = nf4_sets[i % sets_n]
                    lib.lib.fk_set_split(1)
                    lib.check(lib.lib.fk_gemm_nf4(
                        1, a.data_ptr(), a.stride(0), packed.data_ptr(), n, k, absmax.data_ptr(), None, None, None,
                        ctypes.c_float(0), c.data_ptr(), c.stride(0), m, EPI[epi], bias.data_ptr(),
                        res.data_ptr() if res is not None else None, res.stride(0) if res is not None else 0,
                        gate.data_ptr() if gate is not None else None, gate.stride(0) if gate is not None else 0, m,
                        tile, 0, sp), name)
                return nf4_fn
            schedule, tile, cluster, split = VARIANTS[base]

            def fn(i):
                a, w, c, bias, res, gate = sets[i % sets_n]
                lib.lib.fk_set_split(split)
                lib.check(lib.lib.fk_gemm_bf16(
                    1, a.data_ptr(), a.stride(0), w.data_ptr(), w.stride(0), c.data_ptr(), c.stride(0), m, n, k,
                    EPI[epi], bias.data_ptr(), res.data_ptr() if res is not None else None,
                    res.stride(0) if res is not None else 0, gate.data_ptr() if gate is not None else None,
                    gate.stride(0) if gate is not None else 0, m, tile, cluster, schedule, sp), name)
            return fn

        if epi == "qk":  # the QKV projection with QK-norm + RoPE in the epilogue into q, k, v [1, m, heads, 128]
            heads = n // 384
            tabs = [(torch.randn(128, device=dev).bfloat16(), torch.randn(128, device=dev).bfloat16(),
                     torch.rand(m, 128, device=dev), torch.rand(m, 128, device=dev),
                     *(torch.empty(1, m, heads, 128, device=dev, dtype=torch.bfloat16) for _ in range(3)))
                    for _ in range(sets_n)]

            def qk_variant(name):
                base, lib = split_name(name)
                backend = QK_BACKENDS.get(base)
                if backend is None:
                    return None

                def fn(i):
                    a, w, _, bias, _, _ = sets[i % sets_n]
                    nq, nk, cos, sin, q, kk, v = tabs[i % sets_n]
                    packed, absmax = nf4_sets[i % sets_n] if base == "nf4" else (None, None)
                    lib.lib.fk_set_split(1)
                    lib.check(lib.lib.fk_gemm_qk_norm_rope(
                        backend, a.data_ptr(), a.stride(0), w.data_ptr(), w.stride(0),
                        packed.data_ptr() if packed is not None else None,
                        absmax.data_ptr() if absmax is not None else None, None, None, None,
                        ctypes.c_float(0), bias.data_ptr(), nq.data_ptr(), nk.data_ptr(), cos.data_ptr(),
                        sin.data_ptr(), q.data_ptr(), kk.data_ptr(), v.data_ptr(), m, k, heads, m, m, 0,
                        ctypes.c_float(1e-6), sp), name)
                return fn

        def cublas(i):
            a, w, c, *_ = sets[i % sets_n]
            torch.matmul(a, w.t(), out=c)

        variant = qk_variant if epi == "qk" else gemm_variant
        fns = [variant(v) for v in variants] + [cublas]  # None where a variant has no such epilogue
        per_call = {}
        for j, fn in enumerate(fns):
            if fn is None:
                continue
            for i in range(3):
                fn(i)
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for i in range(10):
                fn(i)
            e.record()
            torch.cuda.synchronize()
            per_call[j] = s.elapsed_time(e) / 10
        times = {j: [] for j in per_call}
        for r in range(args.rounds):
            for j in per_call:
                calls = max(5, int(args.round_ms / per_call[j]))
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                t0 = time.time()
                s.record()
                for i in range(calls):
                    fns[j](i)
                e.record()
                e.synchronize()
                windows.append((shape_index, j, t0, time.time()))
                times[j].append(s.elapsed_time(e) / calls)
        med = [statistics.median(times[j]) if j in times else None for j in range(len(fns))]
        tflops = [flop / x / 1e9 if x else None for x in med]
        medians.append((f"{m} x {k} x {n} {epi}", tflops))
        best = min(x for x in med[:-1] if x)
        print(f"{m:5d} x {k:5d} x {n:5d} {epi:5s}  " + " ".join(f"{x:10.4f}" if x else f"{'-':>10s}" for x in med) +
              f"  {med[-1] / best:6.3f}   ({', '.join(f'{x:.0f}' if x else '-' for x in tflops)} TFLOP/s)",
              flush=True)
        del sets
    smi.terminate()
    samples = []
    for line in smi.communicate()[0].strip().splitlines():
        fields = [x.strip() for x in line.split(",")]
        if len(fields) == 3:
            stamp = datetime.datetime.strptime(fields[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((stamp, float(fields[1]), float(fields[2])))
    print("\nper variant while it ran: TFLOP/s (median), SM clock MHz and board power W (medians of the nvidia-smi "
          "samples), TFLOP/s per GHz")
    for shape_index, (label, tflops) in enumerate(medians):
        cells = []
        for j, name in enumerate(variants + ["torch"]):
            if tflops[j] is None:
                continue
            inside = [(mhz, w) for (t, mhz, w) in samples
                      if any(si == shape_index and fj == j and t0 <= t <= t1 for si, fj, t0, t1 in windows)]
            if inside:
                mhz = statistics.median(x[0] for x in inside)
                watts = statistics.median(x[1] for x in inside)
                cells.append(f"{name} {tflops[j]:.0f} @ {mhz:.0f} MHz {watts:.0f} W ({tflops[j] / mhz * 1e3:.0f})")
            else:
                cells.append(f"{name} {tflops[j]:.0f} (no samples)")
        print(f"  {label:26s} " + "; ".join(cells))


if __name__ == "__main__":
    main()
