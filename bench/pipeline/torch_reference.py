#!/usr/bin/env python3
"""The torch yardstick for `fluxlab bench --component` (run on the GPU machine: torch + transformers, no diffusers).

Times, with CUDA events, in the same run as fluxlab's figures:
  - one FLUX.1-dev transformer step (19 double + 38 single blocks, width 3072, 24 heads x 128, 512 text tokens) at
    1024x1024 and 512x512, batch 1, random bf16 weights: a faithful minimal port of diffusers'
    FluxTransformer2DModel forward (F.linear, F.scaled_dot_product_attention, F.layer_norm, F.rms_norm, the same
    RoPE, modulation and gating), eager and as a CUDA graph (torch.cuda.CUDAGraph, the machinery of
    torch.compile(mode="reduce-overhead") without the 139 s of compiling: the fair twin of `fluxlab bench`'s
    compile rows);
  - T5-XXL v1.1 encoder (transformers' T5EncoderModel(config), random init, bf16) on 512 tokens;
  - the FLUX.1 VAE decoder (diffusers' AutoencoderKL decoder layout, ported: conv_in, mid resnet-attention-resnet,
    4 up blocks of 3 resnets with nearest-2x upsampling, group norm 32, SiLU, conv_out) at 1024x1024, bf16.
bitsandbytes is not available there, so NF4 has no torch twin here; issue 5 quotes diffusers' NF4 figures.

Usage: python3 bench/pipeline/torch_reference.py --out torch.json [--sizes 1024,512] [--iters 10] [--skip t5,vae]
"""
import argparse
import datetime
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

DIM, HEADS, HEAD_DIM = 3072, 24, 128
DOUBLE, SINGLE = 19, 38
IN_CHANNELS, JOINT_DIM, POOLED_DIM = 64, 4096, 768
AXES = (16, 56, 56)
DEVICE = "cuda"
BF16 = torch.bfloat16


def linear_params(n_in, n_out, bias=True):
    w = torch.randn(n_out, n_in, device=DEVICE, dtype=BF16) * (n_in ** -0.5)
    b = torch.randn(n_out, device=DEVICE, dtype=BF16) * 0.02 if bias else None
    return w, b


def lin(x, p):
    return F.linear(x, p[0], p[1])


def modulate_ln(x, shift, scale):
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + scale) + shift


def rope_apply(x, cos, sin):
    # diffusers apply_rotary_emb(use_real=True, use_real_unbind_dim=-1); x [B, H, L, D]
    x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(3)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def flux_rope(txt_len, rows, cols):
    ids = torch.zeros(txt_len + rows * cols, 3, dtype=torch.float64)
    img = torch.zeros(rows, cols, 3, dtype=torch.float64)
    img[..., 1] = torch.arange(rows, dtype=torch.float64)[:, None]
    img[..., 2] = torch.arange(cols, dtype=torch.float64)[None, :]
    ids[txt_len:] = img.reshape(-1, 3)
    cos, sin = [], []
    for axis, dim in enumerate(AXES):
        freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        angles = torch.outer(ids[:, axis], freqs)
        cos.append(angles.cos().repeat_interleave(2, dim=1))
        sin.append(angles.sin().repeat_interleave(2, dim=1))
    return torch.cat(cos, -1).float().to(DEVICE), torch.cat(sin, -1).float().to(DEVICE)


def timestep_embedding(t, dim=256):
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FluxStack:
    """diffusers' FluxTransformer2DModel at FLUX.1-dev's shapes, random bf16 weights."""

    def __init__(self):
        self.x_embedder = linear_params(IN_CHANNELS, DIM)
        self.context_embedder = linear_params(JOINT_DIM, DIM)
        self.t1, self.t2 = linear_params(256, DIM), linear_params(DIM, DIM)
        self.g1, self.g2 = linear_params(256, DIM), linear_params(DIM, DIM)
        self.p1, self.p2 = linear_params(POOLED_DIM, DIM), linear_params(DIM, DIM)
        ones = lambda: torch.ones(HEAD_DIM, device=DEVICE, dtype=BF16)
        self.double = []
        for _ in range(DOUBLE):
            self.double.append({
                "norm1": linear_params(DIM, 6 * DIM), "norm1_context": linear_params(DIM, 6 * DIM),
                "q": linear_params(DIM, DIM), "k": linear_params(DIM, DIM), "v": linear_params(DIM, DIM),
                "aq": linear_params(DIM, DIM), "ak": linear_params(DIM, DIM), "av": linear_params(DIM, DIM),
                "nq": ones(), "nk": ones(), "naq": ones(), "nak": ones(),
                "out": linear_params(DIM, DIM), "add_out": linear_params(DIM, DIM),
                "ff1": linear_params(DIM, 4 * DIM), "ff2": linear_params(4 * DIM, DIM),
                "cff1": linear_params(DIM, 4 * DIM), "cff2": linear_params(4 * DIM, DIM),
            })
        self.single = []
        for _ in range(SINGLE):
            self.single.append({
                "norm": linear_params(DIM, 3 * DIM), "mlp": linear_params(DIM, 4 * DIM),
                "q": linear_params(DIM, DIM), "k": linear_params(DIM, DIM), "v": linear_params(DIM, DIM),
                "nq": ones(), "nk": ones(), "out": linear_params(5 * DIM, DIM),
            })
        self.norm_out = linear_params(DIM, 2 * DIM)
        self.proj_out = linear_params(DIM, IN_CHANNELS)

    @staticmethod
    def heads(x):
        b, l, _ = x.shape
        return x.view(b, l, HEADS, HEAD_DIM).transpose(1, 2)

    def double_block(self, p, x, c, temb, cos, sin):
        shift, scale, gate, shift_m, scale_m, gate_m = lin(temb, p["norm1"])[:, None].chunk(6, dim=-1)
        cshift, cscale, cgate, cshift_m, cscale_m, cgate_m = lin(temb, p["norm1_context"])[:, None].chunk(6, dim=-1)
        nx, nc = modulate_ln(x, shift, scale), modulate_ln(c, cshift, cscale)
        rms = lambda t, w: F.rms_norm(t, (HEAD_DIM,), w, eps=1e-6)
        q = torch.cat([rms(self.heads(lin(nc, p["aq"])), p["naq"]), rms(self.heads(lin(nx, p["q"])), p["nq"])], dim=2)
        k = torch.cat([rms(self.heads(lin(nc, p["ak"])), p["nak"]), rms(self.heads(lin(nx, p["k"])), p["nk"])], dim=2)
        v = torch.cat([self.heads(lin(nc, p["av"])), self.heads(lin(nx, p["v"]))], dim=2)
        att = F.scaled_dot_product_attention(rope_apply(q, cos, sin), rope_apply(k, cos, sin), v)
        att = att.transpose(1, 2).reshape(x.shape[0], -1, DIM)
        ca, xa = att[:, : c.shape[1]], att[:, c.shape[1]:]
        x = x + gate * lin(xa, p["out"])
        x = x + gate_m * lin(F.gelu(lin(modulate_ln(x, shift_m, scale_m), p["ff1"]), approximate="tanh"), p["ff2"])
        c = c + cgate * lin(ca, p["add_out"])
        c = c + cgate_m * lin(F.gelu(lin(modulate_ln(c, cshift_m, cscale_m), p["cff1"]), approximate="tanh"), p["cff2"])
        return x, c

    def single_block(self, p, h, temb, cos, sin):
        shift, scale, gate = lin(temb, p["norm"])[:, None].chunk(3, dim=-1)
        n = modulate_ln(h, shift, scale)
        mlp = F.gelu(lin(n, p["mlp"]), approximate="tanh")
        rms = lambda t, w: F.rms_norm(t, (HEAD_DIM,), w, eps=1e-6)
        q = rope_apply(rms(self.heads(lin(n, p["q"])), p["nq"]), cos, sin)
        k = rope_apply(rms(self.heads(lin(n, p["k"])), p["nk"]), cos, sin)
        v = self.heads(lin(n, p["v"]))
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(h.shape[0], -1, DIM)
        return h + gate * lin(torch.cat([att, mlp], dim=2), p["out"])

    def forward(self, hidden, context, pooled, t, g, cos, sin):
        temb = lin(F.silu(lin(timestep_embedding(t * 1000).to(BF16), self.t1)), self.t2)
        temb = temb + lin(F.silu(lin(timestep_embedding(g * 1000).to(BF16), self.g1)), self.g2)
        temb = F.silu(temb + lin(F.silu(lin(pooled, self.p1)), self.p2))
        x, c = lin(hidden, self.x_embedder), lin(context, self.context_embedder)
        for p in self.double:
            x, c = self.double_block(p, x, c, temb, cos, sin)
        h = torch.cat([c, x], dim=1)
        for p in self.single:
            h = self.single_block(p, h, temb, cos, sin)
        x = h[:, c.shape[1]:]
        scale, shift = lin(temb, self.norm_out)[:, None].chunk(2, dim=-1)
        return lin(modulate_ln(x, shift, scale), self.proj_out)


def time_fn(fn, iters, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return times


def as_graph(fn):
    """Capture fn (after warm-up on a side stream, as torch's docs prescribe) and return (replay, capture seconds)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    start = time.perf_counter()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay, time.perf_counter() - start


def result(component, mode, shape, times, **extra):
    row = {"component": component, "mode": mode, "shape": shape, "median_s": statistics.median(times), "min_s": min(times), "iterations": len(times)}
    row.update(extra)
    print(f"torch {component:11s} {mode:10s} {shape:28s} median {row['median_s'] * 1000:8.2f} ms  min {row['min_s'] * 1000:8.2f} ms", flush=True)
    return row


def bench_transformer(sizes, iters, text_tokens, results):
    torch.manual_seed(0)
    model = FluxStack()
    for side in sizes:
        rows = cols = side // 16
        gen = torch.Generator(device=DEVICE).manual_seed(1)
        hidden = torch.randn(1, rows * cols, IN_CHANNELS, device=DEVICE, dtype=BF16, generator=gen)
        context = torch.randn(1, text_tokens, JOINT_DIM, device=DEVICE, dtype=BF16, generator=gen)
        pooled = torch.randn(1, POOLED_DIM, device=DEVICE, dtype=BF16, generator=gen)
        t = torch.tensor([0.75], device=DEVICE)
        g = torch.tensor([3.5], device=DEVICE)
        cos, sin = flux_rope(text_tokens, rows, cols)
        step = lambda: model.forward(hidden, context, pooled, t, g, cos, sin)
        shape = f"{side}x{side}, {text_tokens} text tokens"
        tokens = rows * cols + text_tokens
        with torch.inference_mode():
            eager = time_fn(step, iters)
            results.append(result("transformer", "eager", shape, eager, width=side, height=side, tokens=text_tokens, quantization="bf16"))
            replay, capture_s = as_graph(step)
            graphed = time_fn(replay, iters)
            results.append(result("transformer", "cuda_graph", shape, graphed, width=side, height=side, tokens=text_tokens, quantization="bf16", capture_s=capture_s))
        print(f"  ({tokens} tokens)", flush=True)
        del replay
    del model
    torch.cuda.empty_cache()


def bench_t5(iters, text_tokens, results):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
                      feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      layer_norm_epsilon=1e-6, dropout_rate=0.0, is_encoder_decoder=False, use_cache=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(BF16)
    try:
        with torch.device(DEVICE):
            model = T5EncoderModel(config).eval()
    finally:
        torch.set_default_dtype(previous)
    ids = torch.randint(0, 32128, (1, text_tokens), device=DEVICE)
    with torch.inference_mode():
        times = time_fn(lambda: model(input_ids=ids).last_hidden_state, iters)
    results.append(result("t5", "eager", f"{text_tokens} tokens", times, tokens=text_tokens, quantization="bf16",
                          attention=getattr(model.config, "_attn_implementation", "?")))
    del model
    torch.cuda.empty_cache()


class VaeDecoder:
    """diffusers' AutoencoderKL decoder at FLUX.1's config, random bf16 weights, NCHW."""

    def __init__(self, latent=16, channels=(128, 256, 512, 512), layers=2, groups=32):
        self.groups = groups
        conv = lambda cin, cout, k: (torch.randn(cout, cin, k, k, device=DEVICE, dtype=BF16) * (cin * k * k) ** -0.5,
                                     torch.randn(cout, device=DEVICE, dtype=BF16) * 0.02)
        norm = lambda c: (torch.ones(c, device=DEVICE, dtype=BF16), torch.zeros(c, device=DEVICE, dtype=BF16))
        resnet = lambda cin, cout: {"n1": norm(cin), "c1": conv(cin, cout, 3), "n2": norm(cout), "c2": conv(cout, cout, 3),
                                    "sc": conv(cin, cout, 1) if cin != cout else None}
        top = channels[-1]
        self.conv_in = conv(latent, top, 3)
        self.mid = [resnet(top, top), resnet(top, top)]
        self.attn = {"n": norm(top), "q": linear_params(top, top), "k": linear_params(top, top), "v": linear_params(top, top), "o": linear_params(top, top)}
        self.up = []
        prev = top
        rev = list(reversed(channels))
        for i, c in enumerate(rev):
            block = {"resnets": [resnet(prev if j == 0 else c, c) for j in range(layers + 1)],
                     "up": conv(c, c, 3) if i < len(rev) - 1 else None}
            self.up.append(block)
            prev = c
        self.norm_out = norm(channels[0])
        self.conv_out = conv(channels[0], 3, 3)

    def gn(self, x, p):
        return F.group_norm(x, self.groups, p[0], p[1], eps=1e-6)

    def res(self, x, p):
        h = F.conv2d(F.silu(self.gn(x, p["n1"])), *p["c1"], padding=1)
        h = F.conv2d(F.silu(self.gn(h, p["n2"])), *p["c2"], padding=1)
        return (F.conv2d(x, *p["sc"]) if p["sc"] is not None else x) + h

    def attention(self, x):
        b, c, h, w = x.shape
        t = self.gn(x, self.attn["n"]).view(b, c, h * w).transpose(1, 2)
        q, k, v = (lin(t, self.attn[n])[:, None] for n in "qkv")
        o = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return lin(o, self.attn["o"]).transpose(1, 2).reshape(b, c, h, w) + x

    def __call__(self, z):
        h = F.conv2d(z, *self.conv_in, padding=1)
        h = self.attention(self.res(h, self.mid[0]))
        h = self.res(h, self.mid[1])
        for block in self.up:
            for p in block["resnets"]:
                h = self.res(h, p)
            if block["up"] is not None:
                h = F.conv2d(F.interpolate(h, scale_factor=2.0, mode="nearest"), *block["up"], padding=1)
        return F.conv2d(F.silu(self.gn(h, self.norm_out)), *self.conv_out, padding=1)


def bench_vae(size, iters, results):
    torch.manual_seed(0)
    decoder = VaeDecoder()
    z = torch.randn(1, 16, size // 8, size // 8, device=DEVICE, dtype=BF16)
    with torch.inference_mode():
        times = time_fn(lambda: decoder(z), iters)
    results.append(result("vae", "eager", f"decode {size}x{size}", times, width=size, height=size, quantization="bf16",
                          cudnn_benchmark=torch.backends.cudnn.benchmark))
    del decoder
    torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", default="1024,512")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--skip", default="", help="comma list of transformer,t5,vae")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("torch_reference: CUDA unavailable", file=sys.stderr)
        return 1
    skip = {s for s in args.skip.split(",") if s}
    sizes = [int(s) for s in args.sizes.split(",")]
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.date.today().isoformat(),
        "text_tokens": args.text_tokens,
        "results": [],
    }
    try:
        import transformers
        report["transformers"] = transformers.__version__
    except ImportError:
        report["transformers"] = None
    steps = [("transformer", lambda: bench_transformer(sizes, args.iters, args.text_tokens, report["results"])),
             ("t5", lambda: bench_t5(args.iters, args.text_tokens, report["results"])),
             ("vae", lambda: bench_vae(sizes[0], args.iters, report["results"]))]
    for name, run in steps:
        if name in skip:
            continue
        try:
            run()
        except Exception as err:  # a failed part must not lose the others' figures
            print(f"torch_reference: {name} failed: {err!r}", file=sys.stderr)
            report.setdefault("errors", {})[name] = repr(err)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    report["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
