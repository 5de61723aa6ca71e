"""Miniature forgetting experiment: LoRA fine-tuning with and without replay and STM.

Offline Whisper tiny.en + SmolLM2-135M-Instruct, LoRA (r=8 on q,k,v) + Q-Former, the same
synthetic targets, seed and number of steps for every setting. After training, KL-to-base
(forward KL, base as reference, teacher-forced on the base's greedy answers to the held-out
built-in retention prompts; ``speechllm.eval.retention.teacher_forced_metrics``) measures how far
the LLM's text behaviour moved. Replay rows are the base's own greedy answers to other prompts
(self-output replay), none of them in the held-out set. Targets are, by default, the base LLM's
own greedy answers to the seed description (as ``speechllm generate`` writes them);
``--targets template`` uses fixed-phrase targets that are not the LLM's words instead.

    OMP_NUM_THREADS=1 python benchmarks/forgetting_mini.py --steps 20
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

REPLAY_PROMPTS = [
    "Name three animals that live in the ocean.", "How do I boil an egg?", "What is a verb?",
    "Suggest a name for a pet goldfish.", "Why do leaves change colour?", "What is 9 plus 14?",
    "Describe a sunset in one sentence.", "List two uses of a paperclip.", "What does a thermometer measure?",
    "Give a synonym for happy.", "What is the opposite of cold?", "How many days are in a leap year?",
    "Write a short greeting for a birthday card.", "What is photosynthesis?", "Name a famous painter.",
    "What is the plural of mouse?",
]


def write_replay(llm, tokenizer, out: Path) -> Path:
    from speechllm.eval.predictors import encode_chats, generate_ids

    ids = encode_chats(tokenizer, [[{"role": "user", "content": p}] for p in REPLAY_PROMPTS])
    answers = generate_ids(llm, tokenizer, ids, 48)
    with open(out, "w", encoding="utf-8") as f:
        for i, (p, a) in enumerate(zip(REPLAY_PROMPTS, answers)):
            row = {"id": f"replay{i}", "kind": "self-output", "messages": [{"role": "user", "content": p}],
                   "response": tokenizer.decode(a, skip_special_tokens=True).strip()}
            f.write(json.dumps(row) + "\n")
    return out


def self_generated_targets(llm, tokenizer, rows_file: Path, out: Path) -> Path:
    """Targets as `speechllm generate` makes them: the frozen LLM's greedy answer to the
    instruction with the seed description where the audio stands (shared chat layout)."""
    from speechllm.config import ModelConfig
    from speechllm.eval.predictors import generate_ids
    from speechllm.models.chat_layout import render_text, substitute_audio_text

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
    replay_file = write_replay(base, tokenizer, work / "replay.jsonl")
    if args.targets == "self":
        rows_file = self_generated_targets(base, tokenizer, rows_file, work / "targets_self.jsonl")
    prompts = load_retention_prompts()[: args.prompts]
    prompt_ids, answers = base_answers(base, tokenizer, prompts, max_new_tokens=32)

    settings = {
        "plain": {},
        "replay (rho=0.25)": {"replay_ratio": 0.25},
        "STM (tau=2.5)": {"stm_tau": 2.5},
        "replay + STM": {"replay_ratio": 0.25, "stm_tau": 2.5},
    }
    results = {}
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
        t.output_dir = str(work / "runs" / args.targets / name.split()[0].replace("+", "plus"))
        t.seed, t.precision, t.lr, t.warmup_steps = 0, "fp32", args.lr, 2
        t.max_steps, t.batch_size, t.save_every, t.eval_every, t.log_every = args.steps, args.batch_size, 0, 0, 5
        t.stm_tau = opts.get("stm_tau")
        t0 = time.perf_counter()
        trainer = Trainer(cfg)
        run = trainer.run()
        tuned = trainer.model.llm.eval()
        m = teacher_forced_metrics(base, tuned, prompt_ids, answers)
        stm_share = trainer.stm_counts[0] / trainer.stm_counts[1] if trainer.stm_counts[1] else None
        results[name] = {**m, "final_ce": run.losses[-1].get("loss_ce"), "stm_masked": stm_share,
                         "seconds": time.perf_counter() - t0}
        print(f"{name:20s} KL-to-base {m['kl_to_base']:.5f}  dNLL {m['delta_nll']:+.4f}  top-1 agree "
              f"{m['top1_agreement']:.3f}  final CE {results[name]['final_ce']:.3f}"
              + (f"  STM masked {stm_share:.0%}" if stm_share is not None else ""), flush=True)
    (work / f"results_{args.targets}.json").write_text(json.dumps(results, indent=2) + "\n")
    plain = results["plain"]["kl_to_base"]
    for name, r in results.items():
        if name != "plain":
            print(f"{name:20s} KL-to-base / plain = {r['kl_to_base'] / plain:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
