"""Where the time of one training step and one batch-64 decode step goes (torch.profiler).

    OMP_NUM_THREADS=1 python benchmarks/profile_steps.py [--decode-steps 16] [--train-steps 2]

Decode: SmolLM2-135M-Instruct (bf16 where fast), 64 DeSTA2-style description prompts prefilled
into the generation engine's slot cache exactly as ``speechllm generate`` does, then
``--decode-steps`` one-token steps of all 64 rows, profiled. Training: ``speechllm train``'s
default step (setting (b) of ``train_throughput.py``: feature cache, bf16, batch 8), profiled over
``--train-steps`` steps after a warm-up. For each: the top operators by self CPU time, the FLOPs of
a step (``torch.utils.flop_counter``), and GFLOP per CPU second against the measured bf16 matmul
peak of the same thread. One thread; CPU seconds (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_machine, matmul_peak_gflops  # noqa: E402


def flops_of(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def profile(fn, steps: int, label: str, peak: float, rows: int = 14) -> None:
    """Profile ``steps`` calls of ``fn``; print the top operators and the rate against ``peak``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()  # warm
    flop = flops_of(fn)
    cpu = time.process_time()
    for _ in range(steps):
        fn()
    per_step = (time.process_time() - cpu) / steps
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
    print(f"\n== {label}: {per_step:.3f} CPU s per step (unprofiled), {flop / 1e9:.1f} GFLOP per step, "
          f"{flop / 1e9 / per_step:.0f} GFLOP/CPU-s = {100 * flop / 1e9 / per_step / peak:.0f}% of the bf16 matmul "
          f"peak ({peak:.0f})")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))


def decode_step_fn(batch: int):
    """A closure running one one-token step of ``batch`` rows over the slot cache (after prefill)."""
    import torch
    from generate_peers import prompt_ids

    from speechllm.generate import load_backend
    from speechllm.generate.backend import SamplingParams
    from speechllm.generate.hf_backend import _SlotDecoder
    from speechllm.generate.slot_cache import SlotKVCache
    from speechllm.utils.hf_compat import cache_kwargs

    backend = load_backend("hf", "offline:smollm2-135m-instruct")
    ids = prompt_ids(batch, "offline:smollm2-135m-instruct")
    decoder = _SlotDecoder(backend, SamplingParams(max_new_tokens=64), None, None)
    state = {}
    with torch.inference_mode():
        shared = decoder._shared_prefix(ids)
        cache = SlotKVCache(backend.cache_layers, batch, chunk=_SlotDecoder.CACHE_CHUNK)
        logits, pos, _, _ = decoder._prefill_into(cache, list(range(batch)), list(range(batch)), ids, shared)
    state.update(cache=cache, logits=logits, pos=pos, steps=0)
    model = backend.model

    @torch.inference_mode()
    def step() -> None:
        if state["steps"] >= 60:  # keep the cache at a realistic answer length (at most 64 tokens)
            raise SystemExit("profile_steps: too many decode steps for one prefill; lower --decode-steps")
        tokens = state["logits"].float().argmax(-1)
        state["cache"].reserve(after=1)
        out = model(input_ids=tokens[:, None], attention_mask=state["cache"].decode_mask(),
                    position_ids=state["pos"][:, None], **cache_kwargs(model, state["cache"]), use_cache=True)
        state["logits"], state["pos"] = out.logits[:, -1, :], state["pos"] + 1
        state["steps"] += 1

    return step


def train_step_fn(work: Path, batch: int):
    from train_throughput import make_data

    from speechllm.config import ModelConfig, RunConfig
    from speechllm.train import Trainer

    rows_file = make_data(work, 48)
    cfg = RunConfig(model=ModelConfig(use_vad=False, adapter_dropout=0.0))
    cfg.data.train = [str(rows_file)]
    cfg.data.feature_cache = str(work / "cache-valid")
    t = cfg.train
    t.output_dir, t.batch_size, t.max_steps = str(work / "run-profile"), batch, 10**6
    t.save_every = t.eval_every = 0
    t.log_every = 10**6
    trainer = Trainer(cfg)
    stream = trainer._micro_batches()
    return lambda: trainer.train_step([next(stream)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--work", default="/tmp/speechllm_train_bench", help="scratch folder of train_throughput.py")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    print("machine:", describe_machine(peak=False))
    peak = matmul_peak_gflops()["bf16"]
    profile(decode_step_fn(args.decode_batch), args.decode_steps, f"decode step, batch {args.decode_batch}", peak)
    if not args.skip_train:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        profile(train_step_fn(work, 8), args.train_steps, "training step, speechllm train defaults, batch 8", peak)
    print("machine after:", describe_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
