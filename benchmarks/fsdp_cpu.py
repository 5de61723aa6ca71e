"""FSDP2 vs data parallel on this CPU: resident LLM bytes per rank, loss agreement and step time.

Tiny random models (``speechllm.testing``: Llama hidden 64 x 2 layers, Whisper d_model 64), 12
rows with audio written here, 8 optimiser steps of batch 2 per rank; three runs side by side in
one invocation: ``accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes 2``
(FSDP2, gloo), the same with ``train.gradient_checkpointing=true`` and with ``train.precision=bf16``
(FSDP2's bf16 mixed-precision policy), ``accelerate launch --config_file
recipes/accelerate/multi_gpu_ddp.yaml --num_processes 2`` (DDP) and one process with the doubled
batch. Prints what each run's
``environment.json`` records, the largest loss difference between the runs and the median step
time (from ``metrics.jsonl``: samples per second over 4 samples a step). At this size the step time
is collective and Python overhead, not arithmetic: it says what sharding costs in latency on gloo,
not what it saves on a GPU. The load average is printed (the machine is shared).

    OMP_NUM_THREADS=1 python benchmarks/fsdp_cpu.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speechllm.testing.net import free_port

REPO = Path(__file__).resolve().parents[1]


def _launch(config_file: str | None, config: Path, out: Path, *extra: str) -> float:
    cmd = ([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / config_file),
            "--num_processes", "2", "--main_process_port", str(free_port())] if config_file else [sys.executable])
    cmd += ["-m", "speechllm.cli", "train", "--config", str(config), f"train.output_dir={out}", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    sys.path.insert(0, str(REPO / "tests"))
    from train_fixtures import tiny_run_config, write_rows

    from speechllm.config import save_resolved_config
    from speechllm.testing import build_tiny_llm, build_tiny_whisper

    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        llm, whisper = build_tiny_llm(root / "llm"), build_tiny_whisper(root / "whisper")
        rows = write_rows(root / "data", 12)
        cfg = tiny_run_config(llm, whisper, [rows], root / "unused", max_steps=8, batch_size=2)
        cfg.model.adapter_dropout = 0.0
        cfg.data.bucket_by_length = False
        config = save_resolved_config(cfg, root)
        runs = {
            "FSDP2 (accelerate fsdp.yaml, 2 processes)": ("recipes/accelerate/fsdp.yaml", ()),
            "FSDP2 + gradient checkpointing": ("recipes/accelerate/fsdp.yaml", ("train.gradient_checkpointing=true",)),
            "FSDP2, bf16": ("recipes/accelerate/fsdp.yaml", ("train.precision=bf16",)),
            "DDP (accelerate multi_gpu_ddp.yaml, 2 processes)": ("recipes/accelerate/multi_gpu_ddp.yaml", ()),
            "one process, doubled batch": (None, ("train.batch_size=4",)),
        }
        losses, rows_out = {}, []
        for i, (name, (config_file, extra)) in enumerate(runs.items()):
            out = root / f"run{i}"
            wall = _launch(config_file, config, out, *extra)
            env = json.loads((out / "environment.json").read_text())
            metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            losses[name] = [m["loss"] for m in metrics]
            step_s = statistics.median(m["samples"] / m["samples_per_s"] for m in metrics[1:])
            per_rank = env["llm_parameter_bytes_per_rank"]
            share = ", ".join(f"{b:,} ({b / env['llm_parameter_bytes_total']:.1%})" for b in per_rank)
            rows_out.append(f"| {name} | {env['engine']} | {env['llm_parameter_bytes_total']:,} | {share} | "
                            f"{step_s * 1000:.0f} ms | {wall:.1f} s |")
        print("| run | engine | LLM bytes | resident per rank | median step | launch wall |")
        print("| --- | --- | ---: | --- | ---: | ---: |")
        print("\n".join(rows_out))
        names = list(losses)
        for other in names[1:]:
            diff = max(abs(a - b) for a, b in zip(losses[names[0]], losses[other]))
            print(f"largest loss difference, {names[0]} vs {other}: {diff:.2e} over {len(losses[other])} steps")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
