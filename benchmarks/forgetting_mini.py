"""Miniature forgetting experiment: LoRA fine-tuning with and without replay and STM.

Offline Whisper tiny.en + SmolLM2-135M-Instruct, LoRA (r=8 on q,k,v) + Q-Former, the same
synthetic targets and number of steps for every setting, repeated over ``--seeds``. After
training, KL-to-base (forward KL, base as reference, teacher-forced on the base's greedy answers
to the held-out built-in retention prompts; ``speechllm.eval.retention.teacher_forced_metrics``)
measures how far the LLM's text behaviour moved.

Replay rows are the base's own answers to other prompts (self-output replay), none of them in the
held-out set. ``--replay-targets sampled`` (default) draws them at temperature 1: cross-entropy
on samples of the base is, in expectation, the gradient of KL(base || tuned), the quantity
measured. ``greedy`` replays the base's greedy answers, whose cross-entropy also sharpens the
model towards its argmax. Targets are, by default, the base LLM's own greedy answers to the seed
description (as ``speechllm generate`` writes them); ``--targets template`` uses fixed-phrase
targets that are not the LLM's words instead.

    OMP_NUM_THREADS=1 python benchmarks/forgetting_mini.py --steps 20 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speechllm.study.forgetting import REPLAY_PROMPTS  # noqa: E402 - the study's replay instructions


def write_replay(llm, tokenizer, out: Path, *, sampled: bool, samples: int = 4) -> Path:
    """The base's answers to REPLAY_PROMPTS: ``samples`` draws at temperature 1 each (seeded),
    or one greedy answer each."""
    from speechllm.eval.predictors import generate_ids
    from speechllm.llm_runtime import encode_chats, left_pad

    chats = [[{"role": "user", "content": p}] for p in REPLAY_PROMPTS]
    ids = encode_chats(tokenizer, chats)
    rows = []
    if sampled:
        stop = set(llm.generation_config.eos_token_id if isinstance(llm.generation_config.eos_token_id, list)
                   else [llm.generation_config.eos_token_id]) | {tokenizer.pad_token_id}
        batch, mask = left_pad(ids, tokenizer.pad_token_id)
        for k in range(samples):
            torch.manual_seed(1000 + k)
            with torch.inference_mode():
                drawn = llm.generate(input_ids=batch, attention_mask=mask, max_new_tokens=48, do_sample=True,
                                     temperature=1.0, top_p=1.0, top_k=0, pad_token_id=tokenizer.pad_token_id)
            for i, row in enumerate(drawn[:, batch.shape[1]:].tolist()):
                kept = row[:next((j for j, t in enumerate(row) if t in stop), len(row))]
                rows.append((f"replay{i}-{k}", REPLAY_PROMPTS[i], kept))
    else:
        for i, answer in enumerate(generate_ids(llm, tokenizer, ids, 48)):
            rows.append((f"replay{i}", REPLAY_PROMPTS[i], answer))
    with open(out, "w", encoding="utf-8") as f:
        for rid, prompt, answer in rows:
            row = {"id": rid, "kind": "self-output", "messages": [{"role": "user", "content": prompt}],
                   "response": tokenizer.decode(answer, skip_special_tokens=True).strip()}
            f.write(json.dumps(row) + "\n")
    return out


def self_generated_targets(llm, tokenizer, rows_file: Path, out: Path) -> Path:
    """Targets as `speechllm generate` makes them: the frozen LLM's greedy answer to the
    instruction with the seed description where the audio stands (shared chat layout)."""
    from speechllm.config import ModelConfig
    from speechllm.eval.predictors import generate_ids
    from speechllm.llm_runtime import render_text
    from speechllm.models.chat_layout import substitute_audio_text

    config = ModelConfig()
    rows = [json.loads(x) for x in rows_file.read_text().splitlines() if x.strip()]
    prompts = []
    for r in rows:
        a = r.get("attributes", {})
        r["description"] = (f'[00:00:00 - 00:00:0{int(r["duration"]) + 1}]: "{r["transcript"]}" (Gender: '
                            f'{a.get("gender", "?").capitalize()}, Accent: {a.get("accent", "?")}, Pitch: {a.get("pitch", "?")}, '
                            f'Volume: {a.get("volume", "?")}, Speaking speed: {a.get("speaking_rate", "?")}, '
                            f'Duration: {r["duration"]:.0f}s)')
        msgs = substitute_audio_text(r["messages"], [r["description"]], config)
        prompts.append(tokenizer(render_text(tokenizer, msgs, add_generation_prompt=True),
                                 add_special_tokens=False)["input_ids"])
    answers = []
    for i in range(0, len(prompts), 8):
        answers.extend(generate_ids(llm, tokenizer, prompts[i:i + 8], 64))
    with open(out, "w", encoding="utf-8") as f:
        for r, a in zip(rows, answers):
            f.write(json.dumps({**r, "response": tokenizer.decode(a, skip_special_tokens=True).strip()}) + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/speechllm_forgetting", help="scratch folder")
    ap.add_argument("--num", type=int, default=48, help="synthetic utterances")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    ap.add_argument("--replay-targets", choices=["sampled", "greedy"], default="sampled",
                    help="replay rows: the base's answers sampled at temperature 1 (4 per prompt), or greedy")
    ap.add_argument("--settings", nargs="*", default=None, help="run only these settings (default: all)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--prompts", type=int, default=16, help="held-out retention prompts used")
    ap.add_argument("--targets", choices=["self", "template"], default="self",
                    help="self: the base LLM's own answers to the seed description (as `speechllm generate`); "
                    "template: fixed-phrase targets that are not the LLM's words")
    args = ap.parse_args()

    from train_throughput import make_data
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from speechllm.assets import resolve_model
    from speechllm.config import ModelConfig, RunConfig
    from speechllm.eval.retention import (
        base_answers,
        load_retention_prompts,
        teacher_forced_metrics,
    )
    from speechllm.train import Trainer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows_file = make_data(work, args.num)
    llm_path = resolve_model("offline:smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    base = AutoModelForCausalLM.from_pretrained(llm_path, dtype=torch.float32).eval()
    replay_file = write_replay(base, tokenizer, work / f"replay_{args.replay_targets}.jsonl",
                               sampled=args.replay_targets == "sampled")
    if args.targets == "self":
        rows_file = self_generated_targets(base, tokenizer, rows_file, work / "targets_self.jsonl")
    prompts = load_retention_prompts()[: args.prompts]
    prompt_ids, answers = base_answers(base, tokenizer, prompts, max_new_tokens=32)

    settings = {
        "plain": {},
        "replay (rho=0.25)": {"replay_ratio": 0.25},
        "replay + KL-to-base": {"replay_ratio": 0.25, "replay_kl_weight": 1.0},
        "STM (tau=2.5)": {"stm_tau": 2.5},
        "replay + STM": {"replay_ratio": 0.25, "stm_tau": 2.5},
    }
    if args.settings:
        settings = {k: v for k, v in settings.items() if k.split()[0] in args.settings or k in args.settings}
    results: dict[str, dict[int, dict]] = {name: {} for name in settings}
    for seed in args.seeds:
        for name, opts in settings.items():
            cfg = RunConfig(model=ModelConfig(use_vad=False, dtype="fp32"))
            cfg.model.lora.enabled = True
            cfg.model.lora.r = 8
            cfg.model.lora.alpha = 16
            cfg.data.train = [str(rows_file)]
            cfg.data.feature_cache = str(work / "cache")
            if opts.get("replay_ratio"):
                cfg.data.replay = [str(replay_file)]
                cfg.data.replay_ratio = opts["replay_ratio"]
            t = cfg.train
            slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
            t.output_dir = str(work / "runs" / args.targets / args.replay_targets / f"seed{seed}" / slug)
            t.seed, t.precision, t.lr, t.warmup_steps = seed, "fp32", args.lr, 2
            t.max_steps, t.batch_size, t.save_every, t.eval_every, t.log_every = args.steps, args.batch_size, 0, 0, 5
            t.stm_tau = opts.get("stm_tau")
            t.replay_kl_weight = opts.get("replay_kl_weight", 0.0)
            t0 = time.perf_counter()
            trainer = Trainer(cfg)
            run = trainer.run()
            tuned = trainer.model.llm.eval()
            m = teacher_forced_metrics(base, tuned, prompt_ids, answers)
            stm_share = trainer.forgetting.stm_masked_share
            results[name][seed] = {**m, "final_ce": run.losses[-1].get("loss_ce"), "stm_masked": stm_share,
                                   "seconds": time.perf_counter() - t0}
            print(f"seed {seed} {name:22s} KL-to-base {m['kl_to_base']:.5f}  dNLL {m['delta_nll']:+.4f}  top-1 agree "
                  f"{m['top1_agreement']:.3f}  final CE {results[name][seed]['final_ce']:.3f}"
                  + (f"  STM masked {stm_share:.0%}" if stm_share is not None else ""), flush=True)
            (work / f"results_{args.targets}_{args.replay_targets}.json").write_text(json.dumps(results, indent=2) + "\n")
    if "plain" not in results:
        return 0
    print(f"\n{'setting':22s} {'mean KL':>9s} {'mean / plain':>13s} {'seeds below plain':>18s}")
    plain = results["plain"]
    for name, per_seed in results.items():
        mean = sum(r["kl_to_base"] for r in per_seed.values()) / len(per_seed)
        ratios = [per_seed[s]["kl_to_base"] / plain[s]["kl_to_base"] for s in per_seed]
        below = sum(r < 1.0 for r in ratios)
        print(f"{name:22s} {mean:9.5f} {sum(ratios) / len(ratios):13.2f} {below:>11d} of {len(ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
