#!/usr/bin/env python3
"""What one FLUX.1-dev transformer step costs on this GPU when only its matmuls and its attention run, on NVIDIA's
own kernels: torch's cuBLAS matmuls (no bias, no epilogue) and the fastest scaled_dot_product_attention backend,
at the step's exact shapes and order, one CUDA graph replayed back to back so that the card sits in the sustained
state a 28-step pipeline runs in (on an H100 SXM: at its 700 W software power cap, bench/power.py).

Why: a step is at least its GEMMs and its attention. Timed this way they say how fast a step can be at the speed
the vendor's kernels sustain on this very card; fluxlab's step (norms, RoPE, gates, NF4 dequantization included)
is timed in the same call by `scripts/gpu-test.sh floor`. Napkin math: 74.4 TFLOP at 1024² (59.5 of GEMMs, 14.9 of
attention), 0.095 s at the 785 TFLOP/s an H100's bf16 matmul reaches in bursts.

Each weight is its own tensor, as in the model (~24 GB at bf16), so weights stream from HBM as they do in a step.
Besides the whole step, the GEMMs alone, the attention alone, the M = 1 modulation GEMVs alone and each GEMM shape
alone (all of its calls in a step) are timed the same way, and each SDPA backend alone on the step's attention shape (the fastest one runs in the step graphs).

With --fluxk bench/kernels/build/libfluxk.so (bench/kernels/build.sh) the same sequence runs a second time on
fluxlab's kernels (the addon's dispatch, plain epilogue, bias-free), so both libraries' kernels are compared on the
same work in the same sustained state.

Usage: python3 bench/step_floor.py [--sizes 1024,512] [--steps 30] [--fluxk LIB] [--out floor.json]
"""
import argparse
import ctypes
import datetime
import json
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

DIM, HEADS, HEAD_DIM, MLP = 3072, 24, 128, 12288
DOUBLE, SINGLE = 19, 38
IN_CHANNELS, JOINT_DIM = 64, 4096
BF16 = torch.bfloat16
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def step_ops(image_tokens, text_tokens):
    """The step's matmuls and attentions in model order: ("gemm", M, K, N) is [M, K] x [N, K]^T; ("attn", L) is 24
    heads of L x L at head_dim 128. The single blocks' q/k/v and MLP-up projections read the same input: one GEMM of
    3 x 3072 + 12288 columns, as fluxlab's kernels count them."""
    joint = image_tokens + text_tokens
    ops = [("gemm", image_tokens, IN_CHANNELS, DIM), ("gemm", text_tokens, JOINT_DIM, DIM)]
    for _ in range(DOUBLE):
        ops += [("gemm", 1, DIM, 6 * DIM), ("gemm", 1, DIM, 6 * DIM)]
        ops += [("gemm", image_tokens, DIM, 3 * DIM), ("gemm", text_tokens, DIM, 3 * DIM), ("attn", joint)]
        for rows in (image_tokens, text_tokens):
            ops += [("gemm", rows, DIM, DIM), ("gemm", rows, DIM, MLP), ("gemm", rows, MLP, DIM)]
    for _ in range(SINGLE):
        ops += [("gemm", 1, DIM, 3 * DIM), ("gemm", joint, DIM, 3 * DIM + MLP), ("attn", joint),
                ("gemm", joint, DIM + MLP, DIM)]
    ops += [("gemm", 1, DIM, 2 * DIM), ("gemm", image_tokens, DIM, IN_CHANNELS)]
    return ops


def flops(op):
    if op[0] == "gemm":
        return 2 * op[1] * op[2] * op[3]
    return 4 * HEADS * op[1] * op[1] * HEAD_DIM


def kind(op):
    if op[0] == "attn":
        return "attention"
    return "gemv" if op[1] == 1 else "gemm"


class Fluxk:
    """fluxlab's GEMM and attention through bench/kernels' extern "C" shims (capi.cu), on torch's current stream."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        vp, ll, i, f = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_float
        self.lib.fk_error_string.restype = ctypes.c_char_p
        self.lib.fk_gemm_bf16.restype = i
        self.lib.fk_gemm_bf16.argtypes = [i, vp, ll, vp, ll, vp, ll, i, i, i, i, vp, vp, ll, vp, ll, i, i, i, i, vp]
        self.lib.fk_attention.restype = i
        self.lib.fk_attention.argtypes = [i, vp, vp, vp, vp, i, i, i, i, ctypes.POINTER(ll), f, vp]

    def check(self, code, what):
        if code:
            raise RuntimeError(f"{what}: {self.lib.fk_error_string(code).decode()} ({code})")

    @staticmethod
    def stream():
        return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def linear(self, x, w, c):
        m, k = x.shape
        n = w.shape[0]
        self.check(self.lib.fk_gemm_bf16(0, x.data_ptr(), x.stride(0), w.data_ptr(), w.stride(0), c.data_ptr(), n, m,
                                         n, k, 0, None, None, 0, None, 0, m, 0, 0, 0, self.stream()), "fk_gemm_bf16")

    def attention(self, q, k, v, o):
        batch, heads, length, _ = q.shape
        strides = (ctypes.c_longlong * 12)(*([heads * length * HEAD_DIM, length * HEAD_DIM, HEAD_DIM] * 4))
        self.check(self.lib.fk_attention(0, q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), batch, heads,
                                         length, length, strides, 0.0, self.stream()), "fk_attention")


class Step:
    """Weights and activations for one step's ops; run(wanted) issues the ops wanted(op) selects, on torch
    (cuBLAS, SDPA) or, given a Fluxk, on fluxlab's kernels."""

    def __init__(self, ops, fluxk=None):
        self.ops = ops
        self.fluxk = fluxk
        gen = torch.Generator(device="cuda").manual_seed(0)
        self.weights = [torch.randn(op[3], op[2], device="cuda", dtype=BF16, generator=gen) * op[2] ** -0.5
                        if op[0] == "gemm" else None for op in ops]
        rows = max(op[1] for op in ops if op[0] == "gemm")
        self.x = torch.randn(rows, DIM + MLP, device="cuda", dtype=BF16, generator=gen)
        joint = max(op[1] for op in ops if op[0] == "attn")
        self.qkv = [torch.randn(1, HEADS, joint, HEAD_DIM, device="cuda", dtype=BF16, generator=gen) for _ in range(3)]
        if fluxk:
            self.c = torch.empty(max(op[1] * op[3] for op in ops if op[0] == "gemm"), device="cuda", dtype=BF16)
            self.o = torch.empty_like(self.qkv[0])

    def run(self, wanted):
        for op, w in zip(self.ops, self.weights):
            if not wanted(op):
                continue
            x = self.x[: op[1], : op[2]] if op[0] == "gemm" else None
            if self.fluxk and op[0] == "gemm":
                self.fluxk.linear(x, w, self.c[: op[1] * op[3]])
            elif self.fluxk:
                self.fluxk.attention(*self.qkv, self.o)
            elif op[0] == "gemm":
                F.linear(x, w)
            else:
                F.scaled_dot_product_attention(*self.qkv)


def graph_of(fn):
    """Capture fn as a CUDA graph after a warm-up on a side stream (torch's documented recipe)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def sustained(replay, count, warmup=5, min_seconds=1.0):
    """Replays back to back with an event between each: the per-replay times of a card kept busy throughout (at
    least min_seconds of replays, so that short sequences too reach the sustained clock)."""
    for _ in range(warmup):
        replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    replay()
    end.record()
    end.synchronize()
    count = max(count, int(min_seconds / max(start.elapsed_time(end) / 1000, 1e-6)))
    events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
    events[0].record()
    for i in range(count):
        replay()
        events[i + 1].record()
    events[-1].synchronize()
    return [events[i].elapsed_time(events[i + 1]) / 1000 for i in range(count)]


def summary(times, tflop):
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "tflop": tflop, "tflops": tflop / median, "replays": len(times)}


def backend_times(joint, count):
    q, k, v = (torch.randn(1, HEADS, joint, HEAD_DIM, device="cuda", dtype=BF16) for _ in range(3))
    tflop = flops(("attn", joint)) / 1e12
    found = {}
    for name, backend in BACKENDS.items():
        def attention():
            with sdpa_kernel([backend]):
                for _ in range(20):
                    F.scaled_dot_product_attention(q, k, v)
        try:
            graph = graph_of(attention)
        except RuntimeError as err:
            found[name] = {"error": str(err).splitlines()[0]}
            continue
        found[name] = summary([t / 20 for t in sustained(graph.replay, count)], tflop)
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,512")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--fluxk", default="", help="bench/kernels/build/libfluxk.so: also run the sequence on its kernels")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    fluxk = Fluxk(args.fluxk) if args.fluxk else None
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "date": datetime.date.today().isoformat(), "commit": os.environ.get("FLUXLAB_COMMIT", "unknown"),
              "text_tokens": args.text_tokens, "sizes": []}
    for side in (int(s) for s in args.sizes.split(",")):
        image_tokens = (side // 16) ** 2
        ops = step_ops(image_tokens, args.text_tokens)
        backends = backend_times(image_tokens + args.text_tokens, args.steps)
        timed = {name: r for name, r in backends.items() if "median_s" in r}
        best = min(timed, key=lambda name: timed[name]["median_s"])
        entry = {"side": side, "image_tokens": image_tokens, "sdpa_backends": backends, "sdpa_used": best}
        print(f"{report['gpu']}, torch {report['torch']}: {side}x{side} ({image_tokens} + {args.text_tokens} tokens), "
              f"{args.steps} replays back to back each")
        for name, r in backends.items():
            text = r.get("error") or f"{r['median_s'] * 1e3:.3f} ms ({r['tflops']:.0f} TFLOP/s)"
            print(f"  sdpa {name:<9} one attention {text}")
        for library in ("torch", "fluxk") if fluxk else ("torch",):
            step = Step(ops, fluxk if library == "fluxk" else None)
            entry[library] = {}
            # The whole sequence, each kind of op alone, then each GEMM shape alone (all its calls of a step).
            selections = [("step", lambda op: True)] + [(k, lambda op, k=k: kind(op) == k)
                                                         for k in ("gemm", "attention", "gemv")]
            selections += [(f"{op[1]}x{op[2]}x{op[3]} x{ops.count(op)}", lambda o, op=op: o == op)
                           for op in dict.fromkeys(op for op in ops if kind(op) == "gemm")]
            for label, wanted in selections:
                with sdpa_kernel([BACKENDS[best]]):
                    graph = graph_of(lambda: step.run(wanted))
                tflop = sum(flops(op) for op in ops if wanted(op)) / 1e12
                r = entry[library][label] = summary(sustained(graph.replay, args.steps), tflop)
                del graph
                print(f"  {library:<5} {label:<22} median {r['median_s'] * 1e3:8.3f} ms  min {r['min_s'] * 1e3:8.3f} ms  "
                      f"{r['tflop']:7.3f} TFLOP  {r['tflops']:6.0f} TFLOP/s")
            del step
            torch.cuda.empty_cache()
        report["sizes"].append(entry)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
