"""Target generation against a peer: transformers' own continuous batching, same prompts, side by side.

    OMP_NUM_THREADS=1 python benchmarks/generate_peers.py [--rows 64] [--max-new-tokens 64]

SmolLM2-135M-Instruct (offline asset) in bf16 where the CPU has fast bf16, greedy, one thread,
answering DeSTA2-style description prompts (the rows of ``generate_throughput.py``):

- ours: ``HFBackend.generate_ids`` (the slot decoder ``speechllm generate`` runs), batch 64;
- transformers: ``model.generate_batch`` (its continuous-batching manager, paged cache of 64
  pages of 256 positions, up to ``--batch-size`` requests per step), on the same token ids.

Each runs in its own subprocess (so that its peak resident memory is its own), after a warm-up
call on 4 rows; the figures are CPU seconds of that process and wall seconds. Prints tokens per
CPU second, the ratio, how many rows agree token for token, peak memory and the machine.
llama.cpp is not compared here: no ``llama-cpp-python`` distribution (wheel or source) is on this
machine's package index, so it could not be installed from the registry.
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


def prompt_ids(rows: int, llm: str) -> list[list[int]]:
    """The described rows' generation prompts, tokenised with the LLM's chat template."""
    from generate_throughput import described_rows

    from speechllm.config import RunConfig
    from speechllm.generate.prompts import (
        generation_messages,
        instruction_source,
        training_messages,
    )
    from speechllm.llm_runtime import load_causal_lm

    sentences = ["These days are long gone.", "The birch canoe slid on the smooth planks.",
                 "Glue the sheet to the dark blue background.", "It's easy to tell the depth of a well."]
    cfg = RunConfig()
    src = instruction_source(cfg.generation.instruction, cfg.generation.prompt_pool, cfg.generation.seed)
    tokenizer = load_causal_lm(llm, dtype="fp32").tokenizer
    out = []
    for r in described_rows(rows, sentences):
        messages = generation_messages(training_messages(src.instruction_for(r["id"]), cfg.model),
                                       r["description"], cfg.model)
        out.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False))
    return out


def run_one(which: str, ids_file: Path, max_new_tokens: int, batch_size: int) -> dict:
    """One path in this process: tokens, CPU and wall seconds, peak RSS, the token ids."""
    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    ids = json.loads(ids_file.read_text())
    llm = "offline:smollm2-135m-instruct"
    if which == "ours":
        from speechllm.generate import load_backend
        from speechllm.generate.backend import SamplingParams

        backend = load_backend("hf", llm)
        params = SamplingParams(max_new_tokens=max_new_tokens)
        backend.generate_ids(ids[:4], params, batch_size=4)  # warm-up
        cpu, wall = time.process_time(), time.perf_counter()
        outs = [c.token_ids for c in backend.generate_ids(ids, params, batch_size=batch_size)]
    else:
        from transformers import AutoModelForCausalLM, GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        from speechllm.assets import resolve_model
        from speechllm.utils.hardware import default_dtype_name

        path = resolve_model(llm)
        dtype = torch.bfloat16 if default_dtype_name() == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").eval()
        eos = model.generation_config.eos_token_id
        gc = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                              pad_token_id=model.generation_config.pad_token_id or eos)
        # An explicit cache size: by default the manager sizes its paged cache from the free
        # memory, and on a shared machine that got it killed. 64 pages of 256 positions hold
        # every row's prompt and answer at once (64 x ~175 positions); up to batch_size requests
        # per step, as ours.
        cb = ContinuousBatchingConfig(num_blocks=64, max_batch_tokens=4096, max_requests_per_batch=batch_size)
        with torch.inference_mode():
            model.generate_batch(inputs=ids[:4], generation_config=gc, continuous_batching_config=cb)  # warm-up
            cpu, wall = time.process_time(), time.perf_counter()
            result = model.generate_batch(inputs=ids, generation_config=gc, continuous_batching_config=cb,
                                          warmup=False)
        stops = set(eos if isinstance(eos, list) else [eos])
        outs = []
        for i in range(len(ids)):
            toks = list(result[f"req_{i}"].generated_tokens)
            outs.append([t for t in toks[:next((k for k, t in enumerate(toks) if t in stops), len(toks))]])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"tokens": sum(len(o) for o in outs), "cpu": cpu, "wall": wall, "rss_mib": peak_rss_mib(), "outs": outs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="our slot decoder's rows at once")
    parser.add_argument("--only", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:  # a child: one path
        args.result.write_text(json.dumps(run_one(args.only, args.ids, args.max_new_tokens, args.batch_size)))
        return 0

    import tempfile

    print("machine:", describe_machine())
    work = Path(tempfile.mkdtemp(prefix="generate_peers_"))
    ids_file = work / "ids.json"
    ids_file.write_text(json.dumps(prompt_ids(args.rows, "offline:smollm2-135m-instruct")))
    results = {}
    for which in ("ours", "transformers"):
        out = work / f"{which}.json"
        subprocess.run([sys.executable, __file__, "--only", which, "--ids", str(ids_file), "--result", str(out),
                        "--rows", str(args.rows), "--max-new-tokens", str(args.max_new_tokens),
                        "--batch-size", str(args.batch_size)], check=True)
        results[which] = json.loads(out.read_text())
        r = results[which]
        print(f"  {which}: {r['tokens']} tokens, {r['cpu']:.1f} CPU s, {r['wall']:.1f} wall s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    ours, peer = results["ours"], results["transformers"]
    same = sum(a == b for a, b in zip(ours["outs"], peer["outs"], strict=True))
    print(f"\n{args.rows} prompts, at most {args.max_new_tokens} new tokens, greedy, one thread")
    print(f"{'path':44s} {'tokens':>7s} {'tok/CPU-s':>10s} {'tok/wall-s':>11s} {'peak RSS MiB':>13s}")
    for name, r in ((f"speechllm slot decoder (batch {args.batch_size})", ours),
                    ("transformers generate_batch (continuous)", peer)):
        print(f"{name:44s} {r['tokens']:7d} {r['tokens'] / r['cpu']:10.1f} {r['tokens'] / r['wall']:11.1f} "
              f"{r['rss_mib']:13.0f}")
    ratio_cpu = (ours["tokens"] / ours["cpu"]) / (peer["tokens"] / peer["cpu"])
    ratio_wall = (ours["tokens"] / ours["wall"]) / (peer["tokens"] / peer["wall"])
    print(f"ours / transformers: {ratio_cpu:.2f}x per CPU second, {ratio_wall:.2f}x per wall second; "
          f"{same} of {args.rows} rows identical token for token")
    print("machine after:", describe_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
