"""FSDP2 start-up memory: every rank loading the whole LLM vs rank 0 only (``train.fsdp_rank0_load``).

For each LLM, two ``accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes 2``
runs (gloo, CPU, fp32, 3 optimiser steps of batch 2 per rank, adapter + LoRA trained) side by side:
``train.fsdp_rank0_load=false`` (every rank reads the whole LLM, then shards it) and ``true`` (rank 1
builds the LLM on the meta device and receives its shards from rank 0). Prints, per rank, what each
run's ``environment.json`` records: the LLM parameter bytes the rank held before sharding, its peak
resident memory at the end of set-up (``ru_maxrss``: Python, torch, the Whisper encoder and the
data included) and the LLM bytes resident after sharding; and the largest loss difference between
the two runs. LLMs: the tiny random Llama of ``speechllm.testing`` and the real SmolLM2-135M-Instruct
(``offline:smollm2-135m-instruct``, skipped when not installed); the encoder is the tiny random
Whisper for both. The load average is printed (the machine is shared).

    OMP_NUM_THREADS=1 python benchmarks/fsdp_rank0_load.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from speechllm.testing.net import free_port

REPO = Path(__file__).resolve().parents[1]


def _launch(config: Path, out: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes" / "accelerate" / "fsdp.yaml"), "--num_processes", "2",
           "--main_process_port", str(free_port()), "-m", "speechllm.cli", "train", "--config", str(config),
           f"train.output_dir={out}", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with open(out.parent / f"{out.name}.log", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = (out.parent / f"{out.name}.log").read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd)} failed; the end of its log:\n{tail}")


def _mb(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def main() -> int:
    sys.path.insert(0, str(REPO / "tests"))
    from train_fixtures import tiny_run_config, write_rows

    from speechllm.assets import resolve_model
    from speechllm.config import save_resolved_config
    from speechllm.errors import SpeechLLMError
    from speechllm.testing import build_tiny_llm, build_tiny_whisper

    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        whisper = build_tiny_whisper(root / "whisper")
        rows = write_rows(root / "data", 12)
        llms = {"tiny Llama (speechllm.testing)": str(build_tiny_llm(root / "llm"))}
        try:
            llms["SmolLM2-135M-Instruct"] = str(resolve_model("offline:smollm2-135m-instruct"))
        except SpeechLLMError as e:
            print(f"SmolLM2-135M-Instruct skipped: {e}")
        print("| LLM | fsdp_rank0_load | LLM MB loaded per rank | setup peak RSS MB per rank "
              "| LLM MB resident after sharding | largest loss difference |")
        print("| --- | --- | --- | --- | --- | ---: |")
        for i, (name, llm) in enumerate(llms.items()):
            cfg = tiny_run_config(llm, whisper, [rows], root / "unused", max_steps=3, batch_size=2)
            cfg.model.adapter_dropout = 0.0
            cfg.model.lora.enabled, cfg.model.lora.r, cfg.model.lora.dropout = True, 4, 0.0
            cfg.data.bucket_by_length = False
            config = save_resolved_config(cfg, root / f"cfg{i}")
            losses = {}
            for rank0 in ("false", "true"):
                out = root / f"run{i}-{rank0}"
                _launch(config, out, f"train.fsdp_rank0_load={rank0}")
                env = json.loads((out / "environment.json").read_text())
                losses[rank0] = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
                diff = (f"{max(abs(a - b) for a, b in zip(losses['false'], losses['true'])):.1e} "
                        f"over {len(losses['true'])} steps" if rank0 == "true" else "")
                print(f"| {name} | {rank0} | {' / '.join(_mb(b) for b in env['llm_parameter_bytes_loaded_per_rank'])} | "
                      f"{' / '.join(f'{m:,.0f}' for m in env['setup_peak_memory_mb_per_rank'])} | "
                      f"{' / '.join(_mb(b) for b in env['llm_parameter_bytes_per_rank'])} | {diff} |")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
