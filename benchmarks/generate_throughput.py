"""Target-generation throughput with SmolLM2-135M-Instruct on one CPU thread.

Same prompts (described rows rendered through the framework's chat layout), greedy, side by side
in one run:

1. baseline: what a user writes by hand: fp32 weights, ``model.generate`` one row at a time;
2. plain ``model.generate`` in bf16 with a left-padded batch of 16 (the usual batched loop);
3. the framework's decode loop in fp32, batch 16, length-sorted (separates dtype from the loop);
4. the framework's default: ``generate_targets`` end to end (dtype auto = bf16 on CPUs with fast
   bf16, ``generation.batch_size`` rows, length-sorted, finished rows leave the batch, batch
   refilled), writing the rows;
5. the same with each of ``--batch-sizes``.

1-3 run on the first ``--reference-rows`` rows (their tokens/s does not depend on how many rows
there are: one row or one fixed batch at a time); 4-5 on all ``--rows``, since a continuous batch
needs a queue to stay full.

Generated tokens/s is measured by CPU time (one thread, so other load on a shared machine does not
count) and by wall time; the ratio to the baseline is the headline.

Run:  OMP_NUM_THREADS=1 python benchmarks/generate_throughput.py [--rows 32] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GENDERS = ("female", "male")
ACCENTS = ("American", "Scottish", "British", "Caribbean")
LEVELS = ("low", "normal", "high")
RATES = ("slow", "normal", "fast")


def described_rows(n: int, sentences: list[str]) -> list[dict]:
    """``n`` rows with DeSTA2 descriptions rendered by the describe renderer."""
    from speechllm.describe.renderer import render_description

    rows = []
    for i in range(n):
        row = {"id": f"bench{i:04d}", "audio": f"wav/{i}.wav", "duration": 2.0 + (i * 7) % 9,
               "transcript": sentences[i % len(sentences)],
               "attributes": {"gender": GENDERS[i % 2], "accent": ACCENTS[i % 4], "pitch": LEVELS[i % 3],
                              "speaking_rate": RATES[(i // 3) % 3], "volume": LEVELS[(i // 2) % 3]},
               "provenance": {"gender": "corpus", "accent": "corpus"}}
        row["description"] = render_description(row)
        rows.append(row)
    return rows


class Timer:
    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall


def gemm_gflops(dtype, repeats: int = 50) -> float:
    """Matmul speed right now: on a shared machine other jobs slow bf16 more than fp32."""
    import torch

    a = torch.randn(1024, 576, dtype=dtype)
    b = torch.randn(576, 1536, dtype=dtype)
    a @ b
    start = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * 1024 * 576 * 1536 * repeats / (time.process_time() - start) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=128, help="described rows (default 128)")
    parser.add_argument("--reference-rows", type=int, default=32,
                        help="rows for the one-row and fixed-batch references (default 32)")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16, 32],
                        help="other batch sizes to run the framework with (default 16 32; the default is 64)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="response length limit (default 64)")
    parser.add_argument("--llm", default="offline:smollm2-135m-instruct", help="chat LLM")
    parser.add_argument("--prompt-pool", default=None,
                        help="draw instructions from a pool (default: DeSTA2's fixed instruction)")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    from speechllm.assets import resolve_model
    from speechllm.config import RunConfig
    from speechllm.generate import generate_targets, load_backend
    from speechllm.generate.backend import SamplingParams
    from speechllm.generate.prompts import (
        generation_messages,
        instruction_source,
        training_messages,
    )
    from speechllm.utils.hardware import cpu_has_fast_bf16

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "harvard_sentences.txt"
    sentences = ([s.strip() for s in shared.read_text().splitlines() if s.strip()] if shared.is_file()
                 else ["These days are long gone.", "The birch canoe slid on the smooth planks."])
    rows = described_rows(args.rows, sentences)
    path = resolve_model(args.llm)
    cfg = RunConfig()
    cfg.sampling.max_new_tokens = args.max_new_tokens
    cfg.generation.prompt_pool = args.prompt_pool
    print(f"{args.rows} rows ({args.reference_rows} for references 1-3), max_new_tokens {args.max_new_tokens}, greedy, 1 thread; "
          f"CPU fast bf16: {cpu_has_fast_bf16()}; torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("machine state, GEMM 1024x576 @ 576x1536 (quiet-machine reference: bf16 ~520, fp32 ~116 GFLOP/s): "
          + ", ".join(f"{name} {gemm_gflops(dtype):.0f} GFLOP/s" for name, dtype in
                      (("bf16", torch.bfloat16), ("fp32", torch.float32))))

    ours = load_backend("hf", path)  # the default: dtype auto
    src = instruction_source(cfg.generation.instruction, cfg.generation.prompt_pool, cfg.generation.seed)
    prompts = [ours.render(generation_messages(training_messages(src.instruction_for(r["id"]), cfg.model),
                                               r["description"], cfg.model)) for r in rows]
    prompt_ids = [ours.encode(p) for p in prompts]
    reference_ids = prompt_ids[: args.reference_rows]
    results: dict[str, tuple[int, float, float]] = {}

    # 1. baseline: fp32, one row at a time through model.generate
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    eos = base.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    tokens = 0
    with torch.inference_mode(), Timer() as t:
        for ids in reference_ids:
            x = torch.tensor([ids])
            out = base.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                                do_sample=False, pad_token_id=ours.pad_id)[0, x.shape[1]:].tolist()
            tokens += sum(1 for tok in out if tok not in eos)
    results["fp32, model.generate one row at a time (baseline)"] = (tokens, t.cpu, t.wall)

    # 3. our loop in fp32 (same weights as the baseline)
    fp32_backend = load_backend("hf", path, dtype="fp32")
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    order = sorted(range(len(reference_ids)), key=lambda i: -len(reference_ids[i]))
    with Timer() as t:
        tokens = 0
        for s in range(0, len(order), 16):
            outs = fp32_backend.generate_ids([reference_ids[i] for i in order[s:s + 16]], params)
            tokens += sum(len(c.token_ids) for c in outs)
    results["fp32, speechllm decode loop, batch 16"] = (tokens, t.cpu, t.wall)
    del fp32_backend

    # 2. plain model.generate, bf16, batch 16, left padded
    bf16 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    tokens = 0
    with torch.inference_mode(), Timer() as t:
        for s in range(0, len(reference_ids), 16):
            chunk = reference_ids[s:s + 16]
            width = max(map(len, chunk))
            x = torch.tensor([[ours.pad_id] * (width - len(c)) + c for c in chunk])
            mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
            out = bf16.generate(x, attention_mask=mask, max_new_tokens=args.max_new_tokens, do_sample=False,
                                pad_token_id=ours.pad_id)[:, width:]
            for row in out.tolist():
                for tok in row:
                    if tok in eos:
                        break
                    tokens += 1
    results["bf16, model.generate, batch 16"] = (tokens, t.cpu, t.wall)
    del bf16

    # 4. the framework's default, end to end (rows written to JSONL)
    with tempfile.TemporaryDirectory() as tmp:
        described = Path(tmp) / "described.jsonl"
        described.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with Timer() as t:
            summary = generate_targets(described, Path(tmp) / "targets.jsonl", cfg, backend=ours, progress=False,
                                       faithfulness=False)
        results[f"speechllm default ({ours.dtype_name}, batch {cfg.generation.batch_size}, generate_targets)"] = (
            summary.generated_tokens, t.cpu, t.wall)

    # 5. other batch sizes (a decode step with a small batch is bound by reading the weights
    #    and by small-matrix GEMM efficiency: more rows per step cost little more per step)
    default_batch = cfg.generation.batch_size
    for size in args.batch_sizes:
        if size == default_batch:
            continue
        cfg.generation.batch_size = size
        with tempfile.TemporaryDirectory() as tmp:
            described = Path(tmp) / "described.jsonl"
            described.write_text("".join(json.dumps(r) + "\n" for r in rows))
            with Timer() as t:
                summary = generate_targets(described, Path(tmp) / "targets.jsonl", cfg, backend=ours,
                                           progress=False, faithfulness=False)
            results[f"speechllm, batch {size} ({ours.dtype_name})"] = (summary.generated_tokens, t.cpu, t.wall)

    base_cpu = results["fp32, model.generate one row at a time (baseline)"]
    base_rate_cpu = base_cpu[0] / base_cpu[1]
    base_rate_wall = base_cpu[0] / base_cpu[2]
    print(f"{'configuration':62s} {'tokens':>7s} {'tok/CPU-s':>10s} {'x':>6s} {'tok/s wall':>11s} {'x':>6s}")
    for name, (tok, cpu, wall) in results.items():
        print(f"{name:62s} {tok:7d} {tok / cpu:10.1f} {tok / cpu / base_rate_cpu:6.2f} "
              f"{tok / wall:11.1f} {tok / wall / base_rate_wall:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
