#!/usr/bin/env python3
"""Summary of a GPU `bench` run (scripts/gpu-test.sh bench): fluxlab's figures next to torch's from the same run and
next to issue 5's targets and its diffusers figures (H100 80GB SXM, 2026-11-25).

    python3 bench/pipeline/summary.py DIR [--record FILE]
        reads DIR/bench.json, DIR/components.json, DIR/torch.json (any may be missing) and prints one table;
        --record also writes FILE: bench.json's object ({gpu, commit, date, height, width, steps, rows}) with the
        component figures, torch's figures from the same run and the printed summary added (bench/results/).

Targets are H100 figures: on another card (the machine may lend an H200) compare with the torch column of the
same run, not with the targets.
"""
import contextlib
import io
import json
import os
import sys

# issue 5: diffusers + bitsandbytes + torch.compile on one H100, and the targets.
ISSUE = {
    ("transformer", 1024, "bf16", "eager"): (0.184, None),
    ("transformer", 1024, "bf16", "compile"): (0.139, 0.105),
    ("transformer", 1024, "nf4", "eager"): (0.198, 0.125),
    ("transformer", 1024, "nf4", "compile"): (0.1505, 0.110),
    ("transformer", 512, "nf4", "compile"): (None, 0.045),
    ("t5", 512, "nf4", "eager"): (0.031, 0.030),
    ("vae", 1024, "bf16", "eager"): (0.092, 0.090),
}


def load(directory, name):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ms(value):
    return "-" if value is None else f"{value * 1000:.1f}"


def verdict(value, target):
    if value is None or target is None:
        return ""
    return "meets" if value <= target else "MISSES"


def main():
    args = sys.argv[1:]
    record = None
    if "--record" in args:
        i = args.index("--record")
        if i + 1 >= len(args):
            print("--record needs a file", file=sys.stderr)
            return 2
        record = args[i + 1]
        del args[i:i + 2]
    directory = args[0] if args else "."
    pipeline, components, torch_run = load(directory, "bench.json"), load(directory, "components.json"), load(directory, "torch.json")
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        summarize(pipeline, components, torch_run)
    sys.stdout.write(text.getvalue())
    if record:
        if not pipeline:
            print(f"--record: no {os.path.join(directory, 'bench.json')}", file=sys.stderr)
            return 1
        result = dict(pipeline)
        result["components"] = (components or {}).get("components", [])
        result["torch"] = torch_run
        result["summary"] = text.getvalue().splitlines()
        with open(record, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"recorded {record}")
    return 0


def summarize(pipeline, components, torch_run):
    cards = {name: run["gpu"] for name, run in (("fluxlab", pipeline or components), ("torch", torch_run)) if run}
    print("== bench summary  " + "; ".join(f"{k}: {v}" for k, v in cards.items()))
    if components or pipeline:
        run = components or pipeline
        print(f"   commit {run.get('commit')}, {run.get('date')}, {run.get('model')}")
    torch_index = {}
    for r in (torch_run or {}).get("results", []):
        size = r.get("width") or r.get("tokens")
        torch_index[(r["component"], size, r["mode"])] = r
    header = f"{'figure':50s} {'fluxlab ms':>10s} {'torch ms':>9s} {'ratio':>6s} {'target':>7s} {'':7s} {'diffusers (issue)':>17s}"
    print(header)
    print("-" * len(header))
    for c in (components or {}).get("components", []):
        size = c.get("width") if c["component"] in ("transformer", "vae") else c.get("tokens")
        label = f"{c['component']} {c['shape']} {c['quantization']} {c['compile']}"
        twin = None
        if c["quantization"] == "bf16":
            twin = torch_index.get((c["component"], size, "cuda_graph" if c["compile"] == "compile" else "eager"))
        diffusers, target = ISSUE.get((c["component"], size, c["quantization"], c["compile"]), (None, None))
        t = twin["median_s"] if twin else None
        ratio = f"{c['median_s'] / t:.2f}" if t else "-"
        extra = f"  capture {c['capture_s']:.2f} s" if c.get("capture_s") is not None else ""
        print(f"{label:50s} {ms(c['median_s']):>10s} {ms(t):>9s} {ratio:>6s} {ms(target):>7s} {verdict(c['median_s'], target):7s} {ms(diffusers):>17s}{extra}")
    if pipeline:
        print()
        print(f"pipeline {pipeline['width']}x{pipeline['height']}, {pipeline['steps']} steps "
              f"(issue: NF4 + compile ≤ 3.3 s and ≤ 10.5 GB; diffusers 5.57 s eager, 4.14 s compiled, 13.1 GB)")
        print(f"{'config':22s} {'latency s':>9s} {'step ms':>8s} {'capture s':>9s} {'text ms':>8s} {'VAE ms':>7s} {'peak GiB':>8s} {'graphs GiB':>10s}")
        for r in pipeline["rows"]:
            cfg = f"{r['quantization']}:{r['compile']}:{r['offload']}"
            cap = "-" if r["capture_s"] is None else f"{r['capture_s']:.2f}"
            peak = "-" if r["peak_vram_gb"] is None else f"{r['peak_vram_gb']:.2f}"
            print(f"{cfg:22s} {r['latency_s']:9.3f} {r['step_s'] * 1000:8.1f} {cap:>9s} {r['text_encoder_s'] * 1000:8.1f} "
                  f"{r['vae_s'] * 1000:7.1f} {peak:>8s} {r['graph_gb']:10.2f}")
            if r["quantization"] == "nf4" and r["compile"] == "compile":
                print(f"  → NF4 compiled: latency {verdict(r['latency_s'], 3.3)} 3.3 s; peak {verdict(r['peak_vram_gb'], 10.5 * 1e9 / 2 ** 30)} 10.5 GB; "
                      f"capture {verdict(r['capture_s'], 3.0)} 3 s")
    for name, run in (("torch", torch_run),):
        if run and run.get("errors"):
            print(f"{name} errors: {run['errors']}")


if __name__ == "__main__":
    sys.exit(main())
