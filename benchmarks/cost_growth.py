"""How cost grows: training step time against clip length, generation time against rows, memory.

    OMP_NUM_THREADS=1 python benchmarks/cost_growth.py [--lengths 2 8 20 45] [--rows 32 128 512]

Training: ``speechllm train``'s default step (feature cache, bf16, batch 8; the setting (b) of
``train_throughput.py``) on 8 synthetic clips of ``train_throughput.py``'s corpus, each tiled to
exactly L seconds (the transcripts and ~46-token targets stay the same, so only the audio's share
grows), one warm-up step and ``--steps`` timed steps per length; ``data.max_audio_seconds`` is
raised to the longest length (over 30 s the encoder runs in 30 s windows). Generation: the
generation engine (SmolLM2-135M-Instruct, bf16, batch 64, greedy, at most 64 new tokens) on N
DeSTA2-style description prompts. Every measurement runs in its own process, so its peak resident
memory (printed) is its own; times are CPU seconds of that one-thread process (and wall).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_machine, peak_rss_mib  # noqa: E402


def train_child(work: Path, seconds: float, steps: int) -> dict:
    import numpy as np
    import soundfile as sf
    import torch

    torch.set_num_threads(1)
    from train_throughput import make_data

    from speechllm.audio import load_audio
    from speechllm.config import ModelConfig, RunConfig
    from speechllm.train import Trainer

    rows = [json.loads(x) for x in make_data(work, 48).read_text().splitlines() if x.strip()][:8]
    folder = work / f"len{seconds:g}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "targets.jsonl"
    with open(manifest, "w", encoding="utf-8") as f:
        for r in rows:
            wave = load_audio(r["audio"])
            n = int(seconds * 16_000)
            tiled = np.tile(wave, -(-n // len(wave)))[:n]
            path = folder / Path(r["audio"]).name
            sf.write(path, tiled, 16_000)
            f.write(json.dumps({**r, "audio": str(path), "duration": seconds}) + "\n")
    cfg = RunConfig(model=ModelConfig(use_vad=False, adapter_dropout=0.0))
    cfg.data.train = [str(manifest)]
    cfg.data.max_audio_seconds = max(30.0, seconds)
    cfg.data.feature_cache = str(folder / "cache")
    t = cfg.train
    t.output_dir, t.batch_size, t.max_steps = str(folder / "run"), 8, 10**6
    t.save_every = t.eval_every = 0
    t.log_every = 10**6
    trainer = Trainer(cfg)
    stream = trainer._micro_batches()
    rec = trainer.train_step([next(stream)])  # warm-up (and the feature cache before it)
    cpu, wall, tokens = time.process_time(), time.perf_counter(), 0
    for _ in range(steps):
        rec = trainer.train_step([next(stream)])
        tokens += int(rec["tokens"])
    return {"cpu": (time.process_time() - cpu) / steps, "wall": (time.perf_counter() - wall) / steps,
            "tokens": tokens / steps, "rss_mib": peak_rss_mib()}


def generate_child(rows: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from generate_peers import prompt_ids

    from speechllm.generate import load_backend
    from speechllm.generate.backend import SamplingParams

    backend = load_backend("hf", "offline:smollm2-135m-instruct")
    ids = prompt_ids(rows, "offline:smollm2-135m-instruct")
    params = SamplingParams(max_new_tokens=64)
    backend.generate_ids(ids[:4], params, batch_size=4)  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    outs = backend.generate_ids(ids, params, batch_size=64)
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
            "tokens": sum(len(c.token_ids) for c in outs), "rss_mib": peak_rss_mib()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=float, nargs="*", default=[2, 8, 20, 45])
    ap.add_argument("--rows", type=int, nargs="*", default=[32, 128, 512])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--work", default="/tmp/speechllm_train_bench", help="scratch folder of train_throughput.py")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, value = args.child.split(":")
        out = (train_child(Path(args.work), float(value), args.steps) if kind == "train"
               else generate_child(int(value)))
        args.result.write_text(json.dumps(out))
        return 0

    print("machine:", describe_machine())

    def child(spec: str) -> dict:
        result = Path(args.work) / f"cost-{spec.replace(':', '-')}.json"
        Path(args.work).mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, __file__, "--child", spec, "--result", str(result), "--work", args.work,
                        "--steps", str(args.steps)], check=True, stdout=subprocess.DEVNULL)
        r = json.loads(result.read_text())
        print(f"  {spec}: {r['cpu']:.2f} CPU s, {r['wall']:.2f} wall s, peak RSS {r['rss_mib']:.0f} MiB, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        return r

    train = {length: child(f"train:{length:g}") for length in args.lengths}
    gen = {rows: child(f"generate:{rows}") for rows in args.rows}
    first = train[args.lengths[0]]
    print(f"\ntraining step (batch 8) against clip length; growth relative to {args.lengths[0]:g} s")
    print(f"{'clip s':>7s} {'CPU s/step':>11s} {'x':>6s} {'x per clip-second':>18s} {'LLM positions':>14s} "
          f"{'wall s':>7s} {'peak RSS MiB':>13s}")
    for length, r in train.items():
        grow = r["cpu"] / first["cpu"]
        print(f"{length:7g} {r['cpu']:11.2f} {grow:6.2f} {grow / (length / args.lengths[0]):18.2f} "
              f"{r['tokens']:14.0f} {r['wall']:7.2f} {r['rss_mib']:13.0f}")
    base = gen[args.rows[0]]
    print(f"\ngeneration (batch 64, <= 64 new tokens) against rows; growth relative to {args.rows[0]} rows")
    print(f"{'rows':>5s} {'CPU s':>8s} {'x':>6s} {'x per row':>10s} {'tokens':>7s} {'tok/CPU-s':>10s} {'wall s':>7s} "
          f"{'peak RSS MiB':>13s}")
    for rows, r in gen.items():
        grow = r["cpu"] / base["cpu"]
        print(f"{rows:5d} {r['cpu']:8.1f} {grow:6.2f} {grow / (rows / args.rows[0]):10.2f} {r['tokens']:7d} "
              f"{r['tokens'] / r['cpu']:10.1f} {r['wall']:7.1f} {r['rss_mib']:13.0f}")
    print("machine after:", describe_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
