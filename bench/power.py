"""Runs a command while nvidia-smi samples the GPU every 50 ms, then summarises the busy samples: SM clock, board power
and how often the software power cap held the clock down.

Why: sustained Flux work on an H100 sits at the card's 700 W limit (bench/kernels/ab.py), where a kernel made faster at
the same energy hands the clock to the kernels around it; this says whether a whole run (a transformer step, the
pipeline) is in that state.

Usage: python3 bench/power.py [--out FILE] [--busy 90] -- COMMAND [ARGS...]
"""
import argparse
import statistics
import subprocess
import sys
import time

FIELDS = ["utilization.gpu", "clocks.sm", "clocks.max.sm", "power.draw", "power.limit"]
# The cap reason was renamed (clocks_throttle_reasons -> clocks_event_reasons); older drivers know only the first.
CAP_FIELDS = ["clocks_event_reasons.sw_power_cap", "clocks_throttle_reasons.sw_power_cap"]


def start_sampler():
    for cap in CAP_FIELDS:
        query = ",".join(FIELDS + [cap])
        probe = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return subprocess.Popen(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-lms",
                                     "50"], stdout=subprocess.PIPE, text=True)
    sys.exit("nvidia-smi knows neither power-cap field: " + ", ".join(CAP_FIELDS))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--busy", type=float, default=90.0, help="utilization.gpu (%%) from which a sample counts as busy")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command")
    sampler = start_sampler()
    t0 = time.time()
    rc = subprocess.run(command).returncode
    seconds = time.time() - t0
    sampler.terminate()
    rows = []
    for line in sampler.communicate()[0].strip().splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) == len(FIELDS) + 1 and f[0].replace(".", "").isdigit():
            rows.append((float(f[0]), float(f[1]), float(f[2]), float(f[3]), float(f[4]), f[5] == "Active"))
    busy = [r for r in rows if r[0] >= args.busy]
    lines = [f"command: {' '.join(command)} (exit {rc}, {seconds:.0f} s, {len(rows)} samples, {len(busy)} with "
             f"utilization >= {args.busy:.0f}%)"]
    if busy:
        mhz = sorted(r[1] for r in busy)
        watts = sorted(r[3] for r in busy)
        capped = sum(r[5] for r in busy)

        def pct(v, p):
            return v[min(len(v) - 1, int(p / 100 * len(v)))]
        lines.append(f"busy samples: SM clock median {statistics.median(mhz):.0f} MHz (p10 {pct(mhz, 10):.0f}, p90 "
                     f"{pct(mhz, 90):.0f}; max {busy[0][2]:.0f}), power median {statistics.median(watts):.0f} W (p90 "
                     f"{pct(watts, 90):.0f}; limit {busy[0][4]:.0f}), software power cap active in {capped} of "
                     f"{len(busy)} ({100 * capped / len(busy):.0f}%)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
