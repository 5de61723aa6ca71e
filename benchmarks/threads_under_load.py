"""Torch thread count vs a busy machine: why the mini recipe runs with ``--num_threads auto``.

A training-like step (bf16 forward + backward through SmolLM2-135M-sized MLP blocks, batch 8 x 128
tokens) is timed with 1 thread, with one thread per core, and with ``auto`` (the cores idle when
the command starts, re-counted every 5 s while it runs: speechllm.utils.threads), in three
conditions: the machine as found (its background load is measured and printed), one added busy process from the start (a pure-Python spin loop on
one core, like a second job on a shared box), and that process arriving mid-run. Each setting runs
in its own process, one after another, so the ratios come from one run on one machine. The
figure is the median step time over the second half of the steps (after the load arrived).

    python benchmarks/threads_under_load.py [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

STEP_CODE = r"""
import json, sys, time
threads = sys.argv[1]
from speechllm.utils.threads import set_num_threads
n = set_num_threads(threads)
import torch
torch.manual_seed(0)
hidden, ffn, layers, tokens = 576, 1536, 4, 8 * 128
blocks = [torch.nn.Sequential(torch.nn.Linear(hidden, ffn), torch.nn.SiLU(), torch.nn.Linear(ffn, hidden))
          for _ in range(layers)]
x = torch.randn(tokens, hidden)
def step():
    h = x.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for b in blocks:
            h = h + b(h)
        loss = h.float().pow(2).mean()
    loss.backward()
from speechllm.utils.threads import adapt_threads
step()  # warm-up
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    adapt_threads()  # what every progress-bar update does in the real stages
late = sorted(times[len(times) // 2:])
print(json.dumps({"threads": n, "threads_at_end": torch.get_num_threads(), "median_s": late[len(late) // 2]}))
"""


def _spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def measure(threads: str, steps: int, spin_after: float | None) -> dict:
    """Run the step loop in a fresh process; with ``spin_after`` a busy process starts that many
    seconds after it (0: before it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SPEECHLLM_NUM_THREADS")}
    spinner = None
    if spin_after == 0:
        spinner = _start_spinner()
    child = subprocess.Popen([sys.executable, "-c", STEP_CODE, threads, str(steps)], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        if spin_after:
            time.sleep(spin_after)
            spinner = _start_spinner()
        out, _ = child.communicate()
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.join()
    return json.loads(out.strip().splitlines()[-1])


def _start_spinner():
    spinner = mp.get_context("fork").Process(target=_spin, args=(time.time() + 3600,), daemon=True)
    spinner.start()
    time.sleep(0.5)
    return spinner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--arrive-after", type=float, default=3.0,
                        help="seconds after the start at which the busy process arrives (third condition)")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    conditions = {"no added load": None, "one added busy process": 0.0,
                  f"busy process added after {args.arrive_after:g} s": args.arrive_after}
    from speechllm.utils.threads import busy_cores

    rows = []
    for load, spin_after in conditions.items():
        for threads in ["1", str(cores), "auto"]:
            # Other work already on the machine, measured just before: an honest "idle" needs ~0.
            background = busy_cores(1.0) or 0.0
            result = measure(threads, args.steps, spin_after)
            rows.append((load, threads, background, result["threads"], result["threads_at_end"], result["median_s"]))
    print(f"{cores} usable cores; bf16 MLP step (4 blocks 576-1536-576, 1024 tokens); "
          f"median of the last {args.steps - args.steps // 2} of {args.steps} steps")
    print("| condition | background busy cores | --num_threads | threads at start | at end | s/step | vs 1 thread |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for load, threads, background, start, end, seconds in rows:
        base = next(r[-1] for r in rows if r[0] == load and r[1] == "1")
        print(f"| {load} | {background:.1f} | {threads} | {start} | {end} | {seconds:.3f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
