#!/usr/bin/env python3
"""Checks and microbenchmarks of the VAE / text-encoder kernels (native/src/sm80/vae_t5.h) against torch.

    python3 bench/kernels/vae_t5.py [--out DIR] [--only GROUP[,GROUP]] [--quick]

Needs bench/kernels/build/libfluxk.so (bench/kernels/build.sh; capi_vae_t5.cu is compiled into it) and torch
on a GPU. Groups, each run in its own worker process (a crash or hang fails that group, the next one runs):
  conv    implicit-GEMM conv2d at the FLUX.1 VAE decoder's shapes (1024² output): the addon's NCHW path
          (transposes + kernel), the kernel alone on NHWC activations, torch F.conv2d bf16 NCHW and
          channels_last; the nearest-2x upsample fused into the loader vs torch interpolate + conv
  gn      group norm + SiLU vs torch F.group_norm + F.silu, and the device copy bandwidth for reference
  t5      head_dim-64 attention with T5's [1,64,512,512] relative-position bias (scale 1) vs torch SDPA with
          the bias as attn_mask; CLIP's causal mask
  wide    the VAE mid block's attention (1 head x 512 over 16384 tokens) vs torch SDPA
  decode  the whole FLUX.1 VAE decoder at 1024² on random weights: our conv / group norm / attention (torch
          for the linears and adds, as the addon's fluxk GEMM would do them) vs the same graph in torch bf16;
          error of both against float32
Checks: fresh random inputs, outputs poisoned with NaN first, ||out - ref|| / ||ref|| against float32 torch
(TF32 off) with the limit 1e-2 for bf16 (torch's own bf16 error is printed beside it). Timings: CUDA events
around each call after warm-up, median over rounds alternating ours and torch. Writes DIR/vae_t5.json and
DIR/vae_t5.txt; the table prints last.
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
GROUPS = ["conv", "gn", "t5", "wide", "decode"]
F32, BF16, F16, U8 = 0, 1, 2, 3


def flops_conv(b, cin, cout, oh, ow, k):
    return 2.0 * b * cout * cin * k * k * oh * ow


# (name, cin, cout, h, w, kernel, upsample): h, w are the conv's input size (before the upsample)
CONV_SHAPES = [
    ("conv_in 16->512 @128", 16, 512, 128, 128, 3, False),
    ("mid/up0 512->512 @128", 512, 512, 128, 128, 3, False),
    ("up0 upsampler 512 @128->256", 512, 512, 128, 128, 3, True),
    ("up1 resnet 512->512 @256", 512, 512, 256, 256, 3, False),
    ("up1 upsampler 512 @256->512", 512, 512, 256, 256, 3, True),
    ("up2 conv1 512->256 @512", 512, 256, 512, 512, 3, False),
    ("up2 shortcut 1x1 512->256 @512", 512, 256, 512, 512, 1, False),
    ("up2 resnet 256->256 @512", 256, 256, 512, 512, 3, False),
    ("up2 upsampler 256 @512->1024", 256, 256, 512, 512, 3, True),
    ("up3 conv1 256->128 @1024", 256, 128, 1024, 1024, 3, False),
    ("up3 resnet 128->128 @1024", 128, 128, 1024, 1024, 3, False),
    ("conv_out 128->3 @1024", 128, 3, 1024, 1024, 3, False),
]
# awkward shapes for the checks only: (batch, cin, cout, h, w, k, stride, pad, upsample)
CONV_ODD = [
    (2, 77, 77, 13, 11, 3, 1, 1, False),
    (1, 3, 5, 17, 19, 3, 1, 1, False),
    (2, 40, 24, 15, 15, 3, 2, 1, False),
    (1, 24, 36, 7, 9, 3, 1, 1, True),
    (3, 8, 130, 5, 5, 5, 1, 2, False),
]
GN_SHAPES = [(512, 128, 128), (512, 256, 256), (512, 512, 512), (256, 512, 512), (256, 1024, 1024), (128, 1024, 1024)]


class Lib:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        vp, ll, i, f = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_float
        L = self.lib
        L.fk_error_string.restype = ctypes.c_char_p
        L.fk_error_string.argtypes = [i]
        L.fkv_conv2d_nhwc.restype = i
        L.fkv_conv2d_nhwc.argtypes = [vp, ll, vp, ll, vp, vp, i, ll, i, i] + [i] * 13 + [ll, vp]
        L.fkv_conv2d_nchw_workspace.restype = ll
        L.fkv_conv2d_nchw_workspace.argtypes = [i] * 12 + [ll]
        L.fkv_conv2d_nchw.restype = i
        L.fkv_conv2d_nchw.argtypes = [vp, vp, vp, vp] + [i] * 13 + [ll, ll, vp, vp, i, f, i, vp, vp, ll, vp]
        L.fkv_group_norm_workspace_floats.restype = ll
        L.fkv_group_norm_workspace_floats.argtypes = [ll] * 4
        L.fkv_group_norm.restype = i
        L.fkv_group_norm.argtypes = [vp, vp, i, ll, ll, ll, ll, vp, vp, i, f, i, vp, vp]
        P = ctypes.POINTER(ll)
        L.fkv_attention_bias_d64.restype = i
        L.fkv_attention_bias_d64.argtypes = [vp, vp, vp, vp, i, i, i, i, i, P, f, vp, i, P, vp, i, P, vp]
        L.fkv_attention_wide_workspace.restype = ll
        L.fkv_attention_wide_workspace.argtypes = [i] * 5
        L.fkv_attention_wide.restype = i
        L.fkv_attention_wide.argtypes = [vp, vp, vp, vp, i, i, i, i, i, i, P, f, vp, i, P, vp, i, P, vp, ll, vp]

    def check(self, code, what):
        if code != 0:
            raise RuntimeError(f"{what}: {self.lib.fk_error_string(code).decode()} ({code})")


def worker(group, quick, lib_path, results_path):
    import torch
    import torch.nn.functional as F

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    lib = Lib(lib_path)
    L = lib.lib
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

    def code(dt):
        return {torch.float32: F32, torch.bfloat16: BF16, torch.float16: F16, torch.uint8: U8}[dt]

    def poison(x):
        if x.dtype in (torch.bfloat16, torch.float16):
            x.view(torch.int16).fill_(-1)  # 0xFFFF: NaN in both
        else:
            x.fill_(float("nan"))

    def nerr(o, ref):
        o = o.float()
        r = ref.float()
        if torch.isnan(o).any():
            return float("nan")
        return (torch.linalg.vector_norm((o - r).double()) / torch.linalg.vector_norm(r.double())).item()

    def timeit(fn, budget_s=0.2):
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one = max(time.perf_counter() - t0, 1e-5)
        iters = int(min(50, max(3, budget_s / one)))
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for i in range(iters):
            ev[i][0].record(stream)
            fn()
            ev[i][1].record(stream)
        torch.cuda.synchronize()
        ts = sorted(a.elapsed_time(b) for a, b in ev)
        return ts[len(ts) // 2]

    def timepair(mine, ref, rounds=3, budget_s=0.2):
        a, b = [], []
        for _ in range(rounds):
            a.append(timeit(mine, budget_s))
            b.append(timeit(ref, budget_s))
        return sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]

    def record(name, **kw):
        r = {"group": group, "name": name}
        r.update(kw)
        emit(r)

    def guarded(name, fn):
        try:
            fn()
        except Exception as e:
            record(name, ok=False, error=f"{type(e).__name__}: {e}"[:400], trace=traceback.format_exc()[-1200:])
            torch.cuda.synchronize()  # a sticky error ends the worker here, and the parent reports it

    # ---------------- ops as the addon runs them ----------------
    def conv_nchw(x, w, b, stride=1, pad=1, up=False, out=None, band_bytes=0, norm=None):
        """norm = (groups, weight, bias, eps, silu): convolve the group norm of x, applied in the transpose."""
        x = x.contiguous()  # the kernels take raw NCHW pointers (torch may hand over permuted views)
        B, C, H, W = x.shape
        cout, _, kh, kw = w.shape
        eh, ew = (2 * H, 2 * W) if up else (H, W)
        oh, ow = (eh + 2 * pad - kh) // stride + 1, (ew + 2 * pad - kw) // stride + 1
        if out is None:
            out = torch.empty(B, cout, oh, ow, device=dev, dtype=x.dtype)
        wsb = L.fkv_conv2d_nchw_workspace(B, C, H, W, cout, kh, kw, stride, pad, oh, ow, int(up), band_bytes)
        ws = torch.empty(wsb, device=dev, dtype=torch.uint8)
        groups, nw, nb, eps, silu = norm if norm else (0, None, None, 0.0, False)
        nws = torch.empty(L.fkv_group_norm_workspace_floats(B, C, H * W, groups) if norm else 1, device=dev,
                          dtype=torch.float32)
        lib.check(L.fkv_conv2d_nchw(ptr(x), ptr(w), ptr(b), ptr(out), code(x.dtype), B, C, H, W, cout, kh, kw, stride,
                                    pad, oh, ow, int(up), band_bytes, groups, ptr(nw), ptr(nb),
                                    code(nw.dtype) if norm else F32, eps, int(silu), ptr(nws), ptr(ws), wsb, sp),
                  "conv2d_nchw")
        return out

    def conv_nhwc(x_nhwc, w_khwc, b, H, W, up=False, out_nhwc=None, pad=1):
        # x_nhwc [B,H,W,C] contiguous, w [cout,kh,kw,cin]
        B, _, _, C = x_nhwc.shape
        cout, kh, kw, _ = w_khwc.shape
        eh, ew = (2 * H, 2 * W) if up else (H, W)
        oh, ow = eh + 2 * pad - kh + 1, ew + 2 * pad - kw + 1
        if out_nhwc is None:
            out_nhwc = torch.empty(B, oh, ow, cout, device=dev, dtype=x_nhwc.dtype)
        lib.check(L.fkv_conv2d_nhwc(ptr(x_nhwc), C, ptr(w_khwc), kh * kw * C, ptr(b), ptr(out_nhwc), 0, cout,
                                    code(x_nhwc.dtype), code(x_nhwc.dtype), B, H, W, C, cout, kh, kw, 1, pad, oh, ow,
                                    int(up), 1, 0, sp), "conv2d_implicit_gemm")
        return out_nhwc

    def group_norm(x, groups, w, b, eps=1e-6, silu=True, out=None):
        x = x.contiguous()
        B, C = x.shape[0], x.shape[1]
        spatial = x.numel() // (B * C)
        if out is None:
            out = torch.empty_like(x)
        ws = torch.empty(L.fkv_group_norm_workspace_floats(B, C, spatial, groups), device=dev, dtype=torch.float32)
        lib.check(L.fkv_group_norm(ptr(x), ptr(out), code(x.dtype), B, C, spatial, groups, ptr(w), ptr(b),
                                   code(w.dtype), eps, int(silu), ptr(ws), sp), "group_norm")
        return out

    def strides_bhld(*ts):
        vals = []
        for t in ts:
            vals += [t.stride(0), t.stride(1), t.stride(2)]
        return (ctypes.c_longlong * 12)(*vals)

    def four(t, frame):
        if t is None:
            return None
        s = t.expand(*frame).stride()
        return (ctypes.c_longlong * 4)(*s)

    def attn_d64(q, k, v, bias=None, mask=None, scale=1.0, out=None):
        B, H, Lq, D = q.shape
        Lk = k.shape[2]
        o = out if out is not None else torch.empty_like(q)
        frame = (B, H, Lq, Lk)
        lib.check(L.fkv_attention_bias_d64(ptr(q), ptr(k), ptr(v), ptr(o), code(q.dtype), B, H, Lq, Lk,
                                           strides_bhld(q, k, v, o), scale, ptr(bias),
                                           code(bias.dtype) if bias is not None else F32, four(bias, frame),
                                           ptr(mask), U8, four(mask, frame), sp), "attention_bias_d64")
        return o

    def attn_wide(q, k, v, scale=None, out=None, ws=None):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        B, H, Lq, D = q.shape
        Lk = k.shape[2]
        o = out if out is not None else torch.empty_like(q)
        wsb = L.fkv_attention_wide_workspace(B, H, Lq, Lk, D)
        if ws is None or ws.numel() < wsb:
            ws = torch.empty(wsb, device=dev, dtype=torch.uint8)
        lib.check(L.fkv_attention_wide(ptr(q), ptr(k), ptr(v), ptr(o), code(q.dtype), B, H, Lq, Lk, D,
                                       strides_bhld(q, k, v, o), scale if scale is not None else 1 / math.sqrt(D),
                                       None, F32, None, None, U8, None, ptr(ws), wsb, sp), "attention_wide")
        return o

    emit({"device": torch.cuda.get_device_name(0), "torch": torch.__version__})

    # ---------------- groups ----------------
    if group == "conv":
        # checks: every VAE shape (at reduced spatial size) and the odd ones, NCHW path, bf16 and f16
        for dt in (torch.bfloat16, torch.float16):
            cases = [(1, cin, cout, 24, 20, k, 1, k // 2, up) for (_, cin, cout, _, _, k, up) in CONV_SHAPES] + CONV_ODD
            for (B, cin, cout, H, W, k, s, p, up) in cases:
                name = f"check conv {str(dt)[6:]} B{B} {cin}->{cout} {H}x{W} k{k} s{s} p{p}{' up' if up else ''}"

                def one():
                    x = torch.randn(B, cin, H, W, device=dev).to(dt)
                    w = (torch.randn(cout, cin, k, k, device=dev) / math.sqrt(cin * k * k)).to(dt)
                    b = (torch.randn(cout, device=dev) * 0.1).to(dt)
                    xin = F.interpolate(x.float(), scale_factor=2, mode="nearest") if up else x.float()
                    ref = F.conv2d(xin, w.float(), b.float(), stride=s, padding=p)
                    o = torch.empty(ref.shape, device=dev, dtype=dt)
                    poison(o)
                    conv_nchw(x, w, b, s, p, up, out=o)
                    torch.cuda.synchronize()
                    xt = F.interpolate(x, scale_factor=2, mode="nearest") if up else x
                    err, terr = nerr(o, ref), nerr(F.conv2d(xt, w, b, stride=s, padding=p), ref)
                    record(name, ok=bool(err <= 1e-2), err=err, torch_err=terr)
                guarded(name, one)
        # bands of output rows (the workspace capped far below the input): bitwise the one-band result
        for (B, cin, cout, H, W, k, s, p, up) in CONV_ODD + [(2, 64, 96, 37, 21, 3, 1, 1, False), (1, 32, 40, 30, 26, 1, 1, 0, False)]:
            for rows in (1, 5):
                name = f"check conv bands of ~{rows} input rows B{B} {cin}->{cout} {H}x{W} k{k} s{s} p{p}{' up' if up else ''}"

                def banded():
                    x = torch.randn(B, cin, H, W, device=dev).bfloat16()
                    w = (torch.randn(cout, cin, k, k, device=dev) / math.sqrt(cin * k * k)).bfloat16()
                    b = (torch.randn(cout, device=dev) * 0.1).bfloat16()
                    whole = conv_nchw(x, w, b, s, p, up)
                    o = torch.empty_like(whole)
                    poison(o)
                    cap = rows * B * W * ((cin + 7) // 8 * 8) * 2
                    conv_nchw(x, w, b, s, p, up, out=o, band_bytes=cap)
                    torch.cuda.synchronize()
                    record(name, ok=bool(torch.equal(o, whole)), max_diff=float((o.float() - whole.float()).abs().max()))
                guarded(name, banded)
        # the group norm (+SiLU) applied in the transpose: bitwise group_norm then the conv, in bands too
        for (B, cin, cout, H, W, k, groups, silu, up, rows) in [(1, 64, 48, 40, 36, 3, 32, True, False, 0),
                                                                (2, 77, 40, 13, 11, 3, 7, True, False, 1),
                                                                (1, 24, 36, 7, 9, 3, 6, False, True, 5)]:
            name = f"check conv of group norm G{groups}{'+silu' if silu else ''} B{B} {cin}->{cout} {H}x{W}{' up' if up else ''}{' bands' if rows else ''}"

            def fused():
                x = (torch.randn(B, cin, H, W, device=dev) * 2).bfloat16()
                w = (torch.randn(cout, cin, k, k, device=dev) / math.sqrt(cin * k * k)).bfloat16()
                b = (torch.randn(cout, device=dev) * 0.1).bfloat16()
                nw, nb = 1 + 0.1 * torch.randn(cin, device=dev), 0.1 * torch.randn(cin, device=dev)
                separate = conv_nchw(group_norm(x, groups, nw, nb, 1e-6, silu), w, b, 1, k // 2, up)
                cap = rows * B * W * ((cin + 7) // 8 * 8) * 2
                o = torch.empty_like(separate)
                poison(o)
                conv_nchw(x, w, b, 1, k // 2, up, out=o, band_bytes=cap, norm=(groups, nw, nb, 1e-6, silu))
                torch.cuda.synchronize()
                record(name, ok=bool(torch.equal(o, separate)), max_diff=float((o.float() - separate.float()).abs().max()))
            guarded(name, fused)
        # the NHWC kernel alone (NHWC output), one shape
        def nhwc_check():
            x = torch.randn(1, 64, 24, 20, device=dev).bfloat16()
            w = (torch.randn(96, 64, 3, 3, device=dev) / 24).bfloat16()
            b = torch.randn(96, device=dev).bfloat16()
            ref = F.conv2d(x.float(), w.float(), b.float(), padding=1)
            o = torch.empty(1, 24, 20, 96, device=dev, dtype=torch.bfloat16)
            poison(o)
            conv_nhwc(x.permute(0, 2, 3, 1).contiguous(), w.permute(0, 2, 3, 1).contiguous(), b, 24, 20, out_nhwc=o)
            torch.cuda.synchronize()
            record("check conv NHWC kernel alone 64->96", ok=bool(nerr(o.permute(0, 3, 1, 2), ref) <= 1e-2),
                   err=nerr(o.permute(0, 3, 1, 2), ref))
        guarded("check conv NHWC kernel alone", nhwc_check)
        # timings at the decoder's shapes
        for (name, cin, cout, H, W, k, up) in (CONV_SHAPES[:3] if quick else CONV_SHAPES):
            def timing():
                x = torch.randn(1, cin, H, W, device=dev).bfloat16()
                w = (torch.randn(cout, cin, k, k, device=dev) / math.sqrt(cin * k * k)).bfloat16()
                b = (torch.randn(cout, device=dev) * 0.1).bfloat16()
                p = k // 2
                oh, ow = (2 * H, 2 * W) if up else (H, W)
                fl = flops_conv(1, cin, cout, oh, ow, k)
                o = torch.empty(1, cout, oh, ow, device=dev, dtype=torch.bfloat16)
                ws = torch.empty(L.fkv_conv2d_nchw_workspace(1, cin, H, W, cout, k, k, 1, p, oh, ow, int(up), 0),
                                 device=dev, dtype=torch.uint8)
                wsb = ws.numel()

                def mine():
                    L.fkv_conv2d_nchw(ptr(x), ptr(w), ptr(b), ptr(o), BF16, 1, cin, H, W, cout, k, k, 1, p, oh, ow,
                                      int(up), 0, 0, None, None, F32, 0.0, 0, None, ptr(ws), wsb, sp)
                whole_bytes = L.fkv_conv2d_nchw_workspace(1, cin, H, W, cout, k, k, 1, p, oh, ow, int(up), 1 << 50)
                ws_whole = torch.empty(whole_bytes, device=dev, dtype=torch.uint8)

                def one_band():  # the input transposed whole, as before the bands
                    L.fkv_conv2d_nchw(ptr(x), ptr(w), ptr(b), ptr(o), BF16, 1, cin, H, W, cout, k, k, 1, p, oh, ow,
                                      int(up), 1 << 50, 0, None, None, F32, 0.0, 0, None, ptr(ws_whole), whole_bytes, sp)

                def torch_nchw():
                    xi = F.interpolate(x, scale_factor=2, mode="nearest") if up else x
                    F.conv2d(xi, w, b, padding=p)
                xcl = x.to(memory_format=torch.channels_last)
                wcl = w.to(memory_format=torch.channels_last)

                def torch_cl():
                    xi = F.interpolate(xcl, scale_factor=2, mode="nearest") if up else xcl
                    F.conv2d(xi, wcl, b, padding=p)
                xn = x.permute(0, 2, 3, 1).contiguous()
                wn = w.permute(0, 2, 3, 1).contiguous()
                on = torch.empty(1, oh, ow, cout, device=dev, dtype=torch.bfloat16)

                def kernel_only():
                    L.fkv_conv2d_nhwc(ptr(xn), cin, ptr(wn), k * k * cin, ptr(b), ptr(on), 0, cout, BF16, BF16, 1, H, W,
                                      cin, cout, k, k, 1, p, oh, ow, int(up), 1, 0, sp)
                poison(o)
                lib.check(L.fkv_conv2d_nchw(ptr(x), ptr(w), ptr(b), ptr(o), BF16, 1, cin, H, W, cout, k, k, 1, p, oh,
                                            ow, int(up), 0, 0, None, None, F32, 0.0, 0, None, ptr(ws), wsb, sp), name)
                xin = F.interpolate(x.float(), scale_factor=2, mode="nearest") if up else x.float()
                err = nerr(o, F.conv2d(xin, w.float(), b.float(), padding=p))
                del xin
                ms, tms = timepair(mine, torch_nchw)
                _, tcl = timepair(kernel_only, torch_cl, rounds=1)
                kms = timeit(kernel_only)
                ms_bands, ms_whole = timepair(mine, one_band)
                record(f"time conv {name}", ok=bool(err <= 1e-2), err=err, ms=ms, torch_ms=tms, torch_cl_ms=tcl, kernel_ms=kms,
                       bands_ms=ms_bands, one_band_ms=ms_whole, workspace_mb=wsb / 2**20,
                       tflops=fl / ms / 1e9, torch_tflops=fl / tms / 1e9, kernel_tflops=fl / kms / 1e9,
                       torch_cl_tflops=fl / tcl / 1e9, ratio=tms / ms, gflop=fl / 1e9)
            guarded(f"time conv {name}", timing)

    elif group == "gn":
        def copy_bw():
            x = torch.empty(1 << 28, device=dev, dtype=torch.uint8)
            y = torch.empty_like(x)
            ms = timeit(lambda: y.copy_(x))
            record("device copy 256 MiB (torch)", ok=True, ms=ms, gbps=2 * x.numel() / ms / 1e6)
        guarded("copy", copy_bw)
        for dt in (torch.bfloat16, torch.float16, torch.float32):
            for (C, H, W, G, silu) in [(512, 64, 64, 32, True), (77, 9, 13, 7, True), (12, 1, 20001, 3, False),
                                       (128, 256, 256, 32, True)]:
                name = f"check groupNorm{'+silu' if silu else ''} {str(dt)[6:]} C{C} {H}x{W} G{G}"

                def one():
                    x = (torch.randn(2, C, H, W, device=dev) * 2 + 0.5).to(dt)
                    w = torch.randn(C, device=dev)
                    b = torch.randn(C, device=dev)
                    ref = F.group_norm(x.float(), G, w, b, 1e-6)
                    if silu:
                        ref = F.silu(ref)
                    o = torch.empty_like(x)
                    poison(o)
                    group_norm(x, G, w, b, 1e-6, silu, out=o)
                    torch.cuda.synchronize()
                    tr = F.group_norm(x, G, w.to(dt), b.to(dt), 1e-6)
                    tr = F.silu(tr) if silu else tr
                    lim = 1e-2 if dt != torch.float32 else 1e-5
                    record(name, ok=bool(nerr(o, ref) <= lim), err=nerr(o, ref), torch_err=nerr(tr, ref))
                guarded(name, one)
        for (C, H, W) in (GN_SHAPES[:2] if quick else GN_SHAPES):
            name = f"time groupNorm+silu bf16 [1,{C},{H},{W}]"

            def timing():
                x = torch.randn(1, C, H, W, device=dev).bfloat16()
                w = torch.randn(C, device=dev).bfloat16()
                b = torch.randn(C, device=dev).bfloat16()
                o = torch.empty_like(x)
                ws = torch.empty(L.fkv_group_norm_workspace_floats(1, C, H * W, 32), device=dev, dtype=torch.float32)

                def mine():
                    L.fkv_group_norm(ptr(x), ptr(o), BF16, 1, C, H * W, 32, ptr(w), ptr(b), BF16, 1e-6, 1, ptr(ws), sp)

                def ref():
                    F.silu(F.group_norm(x, 32, w, b, 1e-6))
                poison(o)
                group_norm(x, 32, w, b, out=o)
                err = nerr(o, F.silu(F.group_norm(x.float(), 32, w.float(), b.float(), 1e-6)))
                ms, tms = timepair(mine, ref)
                nbytes = 3 * x.numel() * 2  # two reads and one write
                record(name, ok=bool(err <= 1e-2), err=err, ms=ms, torch_ms=tms, ratio=tms / ms, gbps=nbytes / ms / 1e6)
            guarded(name, timing)

    elif group == "t5":
        for dt in (torch.bfloat16, torch.float16):
            # "dt" without a mask is the kernel's pair path (T5's case): full blocks, a partial last block, and an odd
            # key count read from a wider row ("dt wide": the bias a slice of [.., Lk + 1]).
            for (B, H, Lq, Lk, bias_kind, mask_kind) in [(1, 64, 512, 512, "f32", None), (1, 64, 512, 512, "dt", "pad"),
                                                        (2, 12, 77, 77, None, "causal"), (3, 5, 77, 33, "f32", "causal"),
                                                        (1, 2, 1, 1, "f32", None), (1, 64, 512, 512, "dt", None),
                                                        (3, 5, 77, 66, "dt", None), (2, 4, 70, 65, "dt wide", None)]:
                name = f"check attn d64 {str(dt)[6:]} B{B} H{H} Lq{Lq} Lk{Lk} bias={bias_kind} mask={mask_kind}"

                def one():
                    q = (torch.randn(B, H, Lq, 64, device=dev) * 0.5).to(dt)
                    k = (torch.randn(B, H, Lk, 64, device=dev) * 0.5).to(dt)
                    v = torch.randn(B, H, Lk, 64, device=dev).to(dt)
                    bias = None
                    if bias_kind:
                        full = torch.randn(1, H, Lq, Lk + (bias_kind == "dt wide"), device=dev) * 3
                        bias = (full if bias_kind == "f32" else full.to(dt))[..., :Lk]
                    mask = None
                    if mask_kind == "pad":
                        mask = (torch.arange(Lk, device=dev) < Lk * 3 // 5).to(torch.uint8).view(1, 1, 1, Lk)
                    elif mask_kind == "causal":
                        mask = (torch.arange(Lk, device=dev)[None, :] <= torch.arange(Lq, device=dev)[:, None]).to(
                            torch.uint8).view(1, 1, Lq, Lk)
                    add = torch.zeros(1, H, Lq, Lk, device=dev) if bias is None else bias.float()
                    if mask is not None:
                        add = add.masked_fill(mask == 0, float("-inf"))
                    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=add, scale=1.0)
                    o = torch.empty_like(q)
                    poison(o)
                    attn_d64(q, k, v, bias, mask, 1.0, out=o)
                    torch.cuda.synchronize()
                    tref = F.scaled_dot_product_attention(q, k, v, attn_mask=add.to(dt), scale=1.0)
                    record(name, ok=bool(nerr(o, ref) <= 1e-2), err=nerr(o, ref), torch_err=nerr(tref, ref))
                guarded(name, one)
        for bias_dt in (torch.bfloat16, torch.float32):
            name = f"time T5 attention [1,64,512,64] + bias {str(bias_dt)[6:]} (x24 layers)"

            def timing():
                q = (torch.randn(1, 64, 512, 64, device=dev) * 0.5).bfloat16()
                k = (torch.randn(1, 64, 512, 64, device=dev) * 0.5).bfloat16()
                v = torch.randn(1, 64, 512, 64, device=dev).bfloat16()
                bias = (torch.randn(1, 64, 512, 512, device=dev) * 3).to(bias_dt)
                o = torch.empty_like(q)
                tb = bias.bfloat16()
                poison(o)
                attn_d64(q, k, v, bias, None, 1.0, out=o)
                err = nerr(o, F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias.float(),
                                                             scale=1.0))
                ms, tms = timepair(lambda: attn_d64(q, k, v, bias, None, 1.0, out=o),
                                   lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=tb, scale=1.0))
                fl = 4.0 * 64 * 512 * 512 * 64
                record(name, ok=bool(err <= 1e-2), err=err, ms=ms, torch_ms=tms, ratio=tms / ms, tflops=fl / ms / 1e9,
                       torch_tflops=fl / tms / 1e9, per_encoder_ms=24 * ms)
            guarded(name, timing)

    elif group == "wide":
        for dt in (torch.bfloat16, torch.float16):
            for (B, H, Lq, Lk, D) in [(1, 1, 4096, 4096, 512), (1, 1, 1000, 777, 512), (2, 3, 130, 65, 264)]:
                name = f"check attn wide {str(dt)[6:]} B{B} H{H} Lq{Lq} Lk{Lk} D{D}"

                def one():
                    q = torch.randn(B, H, Lq, D, device=dev).to(dt)
                    k = torch.randn(B, H, Lk, D, device=dev).to(dt)
                    v = torch.randn(B, H, Lk, D, device=dev).to(dt)
                    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
                    o = torch.empty_like(q)
                    poison(o)
                    attn_wide(q, k, v, out=o)
                    torch.cuda.synchronize()
                    record(name, ok=bool(nerr(o, ref) <= 1e-2), err=nerr(o, ref),
                           torch_err=nerr(F.scaled_dot_product_attention(q, k, v), ref))
                guarded(name, one)

        def timing():
            q, k, v = (torch.randn(1, 1, 16384, 512, device=dev).bfloat16() for _ in range(3))
            o = torch.empty_like(q)
            ws = torch.empty(L.fkv_attention_wide_workspace(1, 1, 16384, 16384, 512), device=dev, dtype=torch.uint8)
            attn_wide(q, k, v, out=o, ws=ws)
            torch.cuda.synchronize()
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
            err = nerr(o, ref)
            ms, tms = timepair(lambda: attn_wide(q, k, v, out=o, ws=ws), lambda: F.scaled_dot_product_attention(q, k, v),
                               rounds=2)
            fl = 4.0 * 16384 * 16384 * 512
            record("time VAE mid-block attention [1,1,16384,512]", ok=bool(err <= 1e-2), err=err, ms=ms, torch_ms=tms,
                   ratio=tms / ms, tflops=fl / ms / 1e9, torch_tflops=fl / tms / 1e9,
                   workspace_mb=ws.numel() / 2**20)
        guarded("time VAE mid-block attention", timing)

    elif group == "decode":
        def decode_bench():
            torch.manual_seed(0)
            blocks = [512, 512, 256, 128]  # reversed block_out_channels of the FLUX.1 VAE

            def conv_p(cin, cout, k):
                return ((torch.randn(cout, cin, k, k, device=dev) / math.sqrt(cin * k * k)),
                        torch.randn(cout, device=dev) * 0.02)

            def gn_p(c):
                return (1 + 0.1 * torch.randn(c, device=dev), 0.1 * torch.randn(c, device=dev))

            def resnet_p(cin, cout):
                p = {"n1": gn_p(cin), "c1": conv_p(cin, cout, 3), "n2": gn_p(cout), "c2": conv_p(cout, cout, 3)}
                if cin != cout:
                    p["sc"] = conv_p(cin, cout, 1)
                return p

            def lin_p(c):
                return (torch.randn(c, c, device=dev) / math.sqrt(c), torch.randn(c, device=dev) * 0.02)
            P = {"conv_in": conv_p(16, 512, 3), "mid0": resnet_p(512, 512), "mid1": resnet_p(512, 512),
                 "attn": {"gn": gn_p(512), "q": lin_p(512), "k": lin_p(512), "v": lin_p(512), "o": lin_p(512)},
                 "norm_out": gn_p(128), "conv_out": conv_p(128, 3, 3)}
            prev = 512
            for i, c in enumerate(blocks):
                P[f"up{i}"] = [resnet_p(prev if j == 0 else c, c) for j in range(3)]
                if i < 3:
                    P[f"up{i}_us"] = conv_p(c, c, 3)
                prev = c

            def cast(tree, dt):
                if isinstance(tree, dict):
                    return {k: cast(v, dt) for k, v in tree.items()}
                if isinstance(tree, list):
                    return [cast(v, dt) for v in tree]
                if isinstance(tree, tuple):
                    return tuple(cast(v, dt) for v in tree)
                return tree.to(dt)

            class TorchOps:
                def conv(self, x, p, up=False, k=3):
                    if up:
                        x = F.interpolate(x, scale_factor=2, mode="nearest")
                    return F.conv2d(x, p[0], p[1], padding=p[0].shape[-1] // 2)

                def gn_silu(self, x, p, silu=True):
                    y = F.group_norm(x, 32, p[0], p[1], 1e-6)
                    return F.silu(y) if silu else y

                def attention(self, q, k, v):
                    return F.scaled_dot_product_attention(q, k, v)

                def norm_conv(self, x, pn, pc):
                    return self.conv(self.gn_silu(x, pn), pc)

            class OurOps:
                """What the addon runs: the norm inside the convolution, the transposes in bands of <= 64 MiB."""
                def conv(self, x, p, up=False, k=3):
                    return conv_nchw(x, p[0], p[1], 1, p[0].shape[-1] // 2, up)

                def gn_silu(self, x, p, silu=True):
                    return group_norm(x, 32, p[0], p[1], 1e-6, silu)

                def norm_conv(self, x, pn, pc):
                    return conv_nchw(x, pc[0], pc[1], 1, pc[0].shape[-1] // 2, norm=(32, pn[0], pn[1], 1e-6, True))

                def attention(self, q, k, v):
                    return attn_wide(q, k, v)

            class SeparateOps(OurOps):
                """Before 2026-11-27: the normalised tensor stored, each input transposed whole."""
                def conv(self, x, p, up=False, k=3):
                    return conv_nchw(x, p[0], p[1], 1, p[0].shape[-1] // 2, up, band_bytes=1 << 50)

                def norm_conv(self, x, pn, pc):
                    return self.conv(self.gn_silu(x, pn), pc)

            def resnet(o, x, p):
                h = o.norm_conv(x, p["n1"], p["c1"])
                h = o.norm_conv(h, p["n2"], p["c2"])
                return (o.conv(x, p["sc"]) if "sc" in p else x) + h

            def attention(o, x, p):
                b, c, hh, ww = x.shape
                t = o.gn_silu(x, p["gn"], silu=False).reshape(b, c, hh * ww).transpose(1, 2)
                q, k, v = (F.linear(t, *p[n]).reshape(b, 1, hh * ww, c) for n in ("q", "k", "v"))
                a = o.attention(q, k, v).reshape(b, hh * ww, c)
                return F.linear(a, *p["o"]).transpose(1, 2).reshape(b, c, hh, ww) + x

            def decode(o, z, p):
                h = o.conv(z, p["conv_in"])
                h = resnet(o, h, p["mid0"])
                h = attention(o, h, p["attn"])
                h = resnet(o, h, p["mid1"])
                for i in range(4):
                    for r in p[f"up{i}"]:
                        h = resnet(o, h, r)
                    if i < 3:
                        h = o.conv(h, p[f"up{i}_us"], up=True)
                return o.norm_conv(h, p["norm_out"], p["conv_out"])

            z = torch.randn(1, 16, 128, 128, device=dev)
            pb = cast(P, torch.bfloat16)
            with torch.no_grad():
                ref = decode(TorchOps(), z, P)  # float32, TF32 off
                ours = decode(OurOps(), z.bfloat16(), pb)
                tb = decode(TorchOps(), z.bfloat16(), pb)
                torch.cuda.synchronize()
                err, terr = nerr(ours, ref), nerr(tb, ref)
                del ref
                torch.cuda.empty_cache()
                separate = decode(SeparateOps(), z.bfloat16(), pb)
                same = bool(torch.equal(separate, ours))
                del separate
                ms, tms = timepair(lambda: decode(OurOps(), z.bfloat16(), pb), lambda: decode(TorchOps(), z.bfloat16(), pb),
                                   rounds=3, budget_s=0.5)
                ms2, sms = timepair(lambda: decode(OurOps(), z.bfloat16(), pb),
                                    lambda: decode(SeparateOps(), z.bfloat16(), pb), rounds=3, budget_s=0.5)

                def peak_of(o):
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    decode(o, z.bfloat16(), pb)
                    torch.cuda.synchronize()
                    return (torch.cuda.max_memory_allocated() - base) / 2**30
                # above what is allocated before the call (weights, latents)
                peak, speak, tpeak = peak_of(OurOps()), peak_of(SeparateOps()), peak_of(TorchOps())
            record("time VAE decode 1024x1024 (random weights, ours vs torch bf16)", ok=bool(err <= max(3e-2, 2 * terr)), err=err,
                   torch_err=terr, ms=ms, torch_ms=tms, ratio=tms / ms, peak_gib=peak, torch_peak_gib=tpeak,
                   target_ms=90.0)
            record("time VAE decode 1024x1024: norm fused + bands vs separate norm + whole transposes", ok=same,
                   ms=ms2, separate_ms=sms, ratio=sms / ms2, peak_gib=peak, separate_peak_gib=speak)
        guarded("time VAE decode", decode_bench)
    out.close()


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) and v == v else "-"


def table(rows):
    lines = []
    hdr = (f"{'test':<74} {'ok':<4} {'err':>9} {'torch err':>9} {'ms':>8} {'torch ms':>8} {'ratio':>6} "
           f"{'TFLOP/s':>8} {'torch':>7} {'GB/s':>6}")
    lines += [hdr, "-" * len(hdr)]
    for r in rows:
        if "name" not in r:
            continue
        err = "NaN" if isinstance(r.get("err"), float) and r["err"] != r["err"] else fmt(r.get("err"), ".2e")
        lines.append(f"{r['name'][:74]:<74} {'ok' if r.get('ok') else 'FAIL':<4} {err:>9} "
                     f"{fmt(r.get('torch_err'), '.2e'):>9} {fmt(r.get('ms'), '.3f'):>8} {fmt(r.get('torch_ms'), '.3f'):>8} "
                     f"{fmt(r.get('ratio'), '.2f'):>6} {fmt(r.get('tflops'), '.1f'):>8} "
                     f"{fmt(r.get('torch_tflops'), '.1f'):>7} {fmt(r.get('gbps'), '.0f'):>6}")
        extra = []
        for key, label in (("kernel_ms", "kernel alone (NHWC in/out) ms"), ("kernel_tflops", "TFLOP/s"),
                           ("torch_cl_ms", "torch channels_last ms"), ("torch_cl_tflops", "TFLOP/s"),
                           ("per_encoder_ms", "x24 layers ms"), ("peak_gib", "peak GiB"),
                           ("torch_peak_gib", "torch peak GiB"), ("separate_ms", "separate ms"),
                           ("separate_peak_gib", "separate peak GiB"), ("bands_ms", "in bands ms"),
                           ("one_band_ms", "one band ms"), ("workspace_mb", "workspace MiB")):
            if key in r:
                extra.append(f"{label} {fmt(r[key], '.3f')}")
        if extra:
            lines.append("    " + ", ".join(extra))
        if r.get("error"):
            lines.append(f"    -> {r['error'][:300]}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "out"))
    ap.add_argument("--lib", default=LIB)
    ap.add_argument("--only", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per group before its worker is killed")
    ap.add_argument("--worker", default="")
    ap.add_argument("--results", default="")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.quick, args.lib, args.results)
        return
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "vae_t5.jsonl")
    open(results_path, "w").close()
    groups = [g for g in GROUPS if not args.only or g in args.only.split(",")]
    t0 = time.time()
    for g in groups:
        print(f"[{time.time() - t0:6.1f}s] group {g}", flush=True)
        before = sum(1 for _ in open(results_path))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", g, "--results", results_path, "--lib", args.lib]
        if args.quick:
            cmd.append("--quick")
        try:
            rc = subprocess.run(cmd, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            with open(results_path, "a") as fh:
                fh.write(json.dumps({"group": g, "name": f"group {g}: worker {'timed out' if rc == 'timeout' else f'exited {rc}'}"
                                     f" after {sum(1 for _ in open(results_path)) - before} records",
                                     "ok": False, "error": "the next test of this group did not finish"}) + "\n")
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    info = next((r for r in rows if "device" in r), {})
    text = table(rows)
    n_ok = sum(1 for r in rows if "name" in r and r.get("ok"))
    n = sum(1 for r in rows if "name" in r)
    summary = {"device": info.get("device"), "torch": info.get("torch"), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "rows": [r for r in rows if "name" in r]}
    with open(os.path.join(args.out, "vae_t5.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    with open(os.path.join(args.out, "vae_t5.txt"), "w") as fh:
        fh.write(text + "\n")
    print("\n" + text)
    print(f"\nvae_t5: {n_ok}/{n} ok, {time.time() - t0:.0f} s, device: {info.get('device', '?')}")
    sys.exit(0 if n_ok == n else 1)


if __name__ == "__main__":
    main()
