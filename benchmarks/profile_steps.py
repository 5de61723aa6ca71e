"""Where the time of one training step and one batch-64 decode step goes (torch.profiler).

    OMP_NUM_THREADS=1 python benchmarks/profile_steps.py [--decode-steps 16] [--train-steps 2]
        [--train-attention eager,fused] [--skip-decode] [--by-shape]

Decode: SmolLM2-135M-Instruct (bf16 where fast), 64 DeSTA2-style description prompts prefilled
into the generation engine's slot cache exactly as ``speechllm generate`` does, then
``--decode-steps`` one-token steps of all 64 rows, profiled. Training: ``speechllm train``'s
default step (setting (b) of ``train_throughput.py``: feature cache, bf16, batch 8), profiled over
``--train-steps`` steps after a warm-up, for each ``--train-attention`` setting (``eager``:
transformers' eager attention and RMSNorm, the step before ``speechllm.train.fused``; ``fused``:
the default on CPU), their timed steps interleaved in this one process. For each: the top
operators by self CPU time, the FLOPs of a step (``torch.utils.flop_counter``), and GFLOP per CPU
second against the bf16 matmul peak of the same thread, measured around the timed steps. One
thread; CPU seconds (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_machine, matmul_peak_gflops  # noqa: E402

MATMUL_OPS = frozenset({"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"})


def flops_of(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def profile(fns: dict[str, Any], steps: int, rows: int = 14, by_shape: bool = False) -> None:
    """Time ``steps`` calls of each labelled closure, interleaved round by round (load on a shared
    machine then falls on all alike), against the bf16 matmul peak measured right before and
    after the timed rounds (it moves by ~10% within minutes on a shared machine); then profile
    each and print its top operators and the share of self CPU time in matmuls."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    flops = {}
    for label, fn in fns.items():
        fn()  # warm
        flops[label] = flops_of(fn)
    peaks = [matmul_peak_gflops(dtypes=("bf16",))["bf16"]]
    spent = dict.fromkeys(fns, 0.0)
    for _ in range(steps):
        for label, fn in fns.items():
            cpu = time.process_time()
            fn()
            spent[label] += time.process_time() - cpu
    peaks.append(matmul_peak_gflops(dtypes=("bf16",))["bf16"])
    peak = sum(peaks) / len(peaks)
    for label, fn in fns.items():
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as prof:
            for _ in range(steps):
                fn()
        per_step, flop = spent[label] / steps, flops[label]
        print(f"\n== {label}: {per_step:.3f} CPU s per step (unprofiled), {flop / 1e9:.1f} GFLOP per step, "
              f"{flop / 1e9 / per_step:.0f} GFLOP/CPU-s = {100 * flop / 1e9 / per_step / peak:.0f}% of the bf16 matmul "
              f"peak ({peak:.0f}: {peaks[0]:.0f} before, {peaks[1]:.0f} after the timed steps)")
        averages = prof.key_averages()
        print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))
        if by_shape:
            print(prof.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total", row_limit=3 * rows, max_name_column_width=32, max_shapes_column_width=70))
        total = sum(e.self_cpu_time_total for e in averages) or 1.0
        matmul = sum(e.self_cpu_time_total for e in averages if e.key in MATMUL_OPS)
        print(f"self CPU time in matmuls ({', '.join(sorted(MATMUL_OPS))}): {100 * matmul / total:.1f}%; "
              f"everything else: {100 * (total - matmul) / total:.1f}%")


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


def train_step_fn(work: Path, batch: int, attention: str = "auto"):
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
    t.attention = attention
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
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--by-shape", action="store_true", help="also list the operators by input shape")
    ap.add_argument("--train-attention", default="fused",
                    help="comma-separated train.attention settings to profile, e.g. eager,fused")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    print("machine:", describe_machine(peak=False))
    if not args.skip_decode:
        profile({f"decode step, batch {args.decode_batch}": decode_step_fn(args.decode_batch)}, args.decode_steps)
    if not args.skip_train:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        profile({f"training step, speechllm train defaults, train.attention={a}, batch 8": train_step_fn(work, 8, a)
                 for a in args.train_attention.split(",")}, args.train_steps, by_shape=args.by_shape)
    print("machine after:", describe_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
