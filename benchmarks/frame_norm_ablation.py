"""The frame-normalisation ablation behind docs/model.md: the mini recipe trained with
``model.frame_norm: global`` (the default) and ``none`` (DeSTA2's raw taps) on the same data.

Builds the mini recipe's data once (egs/TEMPLATE/stages.sh, stages prepare..cache: 400 synthetic
utterances, describe, SmolLM2 targets, feature cache) under ``--work``, trains the two settings
from it with the same seed, steps and cache, and prints per setting:

- the final validation loss (``valid.jsonl`` of the run),
- gender asked as in training on the 40 held-out test clips (``egs/mini/local/attribute_probe.py
  --attributes gender``: accuracy, and the most common answers),
- how much the trained adapter's output varies across those clips: the mean over clips of
  ``||out_i - mean|| / ||mean||`` (the measure of ``benchmarks/encoder_inputs.py``; near 0 means
  the adapter gives every clip the same vectors).

One thread; 45 minutes on a shared 2-core CPU (data 4.5 min, each training 18 min at ~5.5 s per
step beside other jobs, the rest probes); ``--steps`` shortens it, at the price of other figures.

    OMP_NUM_THREADS=1 python benchmarks/frame_norm_ablation.py [--work /tmp/frame_norm_ablation]
        [--steps 200] [--num 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("global", "none")


def stages(work: Path, *args: str) -> None:
    """egs/TEMPLATE/stages.sh with the mini recipe's options (egs/mini/run.sh), one thread."""
    cmd = ["bash", str(ROOT / "egs/TEMPLATE/stages.sh"), "--corpus", "mini", "--tag", "frame_norm_ablation",
           "--num_threads", "1", "--skip_install", "true", "--prepare_mode", "synth",
           "--config", "recipes/mini_offline_cpu.yaml", "--annotators", "duration,vad,volume,snr,pitch,speaking_rate",
           "--prompt_pool", "builtin:speaker", "--gen_max_new_tokens", "64", "--dump", str(work / "dump"), *args]
    subprocess.run(cmd, cwd=ROOT, check=True)


def variation(model_dir: Path, manifest: Path) -> float:
    """Mean over the manifest's clips of ``||out_i - mean|| / ||mean||`` of the adapter's output."""
    import torch

    from speechllm.audio import load_audio
    from speechllm.models.speech_llm import SpeechLLM

    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    waves = [load_audio(manifest.parent / r["audio"], duration=30.0) for r in rows]
    model = SpeechLLM.from_pretrained(model_dir).eval()
    per_clip = []
    with torch.inference_mode():
        for wave in waves:
            encoded = model.encoder.encode([wave], need_final=False)
            out, _ = model.adapter(encoded.taps, encoded.valid_frames)
            per_clip.append(out[0].float().flatten())  # one window, all query vectors
    stacked = torch.stack(per_clip)
    mean = stacked.mean(0)
    return float(((stacked - mean).norm(dim=1) / mean.norm()).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/frame_norm_ablation"), help="data and runs go here")
    ap.add_argument("--steps", type=int, default=200, help="training steps of each setting (the recipe: 200)")
    ap.add_argument("--num", type=int, default=400, help="synthetic utterances (the recipe: 400)")
    args = ap.parse_args()
    work = args.work.resolve()
    dump = work / "dump"

    if not (dump / "features").exists():
        stages(work, "--synth_num", str(args.num), "--synth_seed", "0", "--exp", str(work / "exp" / "data"),
               "--stage", "prepare", "--stop_stage", "cache")
    results = {}
    for norm in SETTINGS:
        exp = work / "exp" / norm
        final = exp / "train" / "final"
        if not final.exists():
            # --force: the stage's done-marker lives in the shared dump, one per stage, not per run
            stages(work, "--exp", str(exp), "--stage", "train", "--stop_stage", "train", "--force", "true",
                   "--overrides", f"model.frame_norm={norm} train.max_steps={args.steps}")
        valid = [json.loads(line) for line in (exp / "train" / "valid.jsonl").read_text().splitlines() if line]
        probe = exp / "gender_probe.json"
        subprocess.run([sys.executable, str(ROOT / "egs/mini/local/attribute_probe.py"), "--model", str(final),
                        "--test", str(dump / "data/test.jsonl"), "--train", str(dump / "data/train.jsonl"),
                        "--attributes", "gender", "--out", str(probe)], cwd=ROOT, check=True)
        gender = json.loads(probe.read_text())["gender"]["speech model"]
        results[norm] = {"valid_loss": valid[-1]["valid_loss"], "step": valid[-1]["step"],
                         "gender": gender["all"], "answers": gender["answers"],
                         "variation": variation(final, dump / "data/test.jsonl")}

    n = results[SETTINGS[0]]["gender"]["n"]
    print(f"\nframe_norm ablation: mini recipe, {args.num} utterances, {args.steps} steps, same data, seed and cache")
    print(f"| frame_norm | validation loss (step) | gender on {n} test clips | most common answers "
          "| adapter output variation across clips |")
    print("| --- | ---: | ---: | --- | ---: |")
    for norm, r in results.items():
        correct = round(r["gender"]["accuracy"] * r["gender"]["n"])
        answers = "; ".join(f"{a!r} x{c}" for a, c in r["answers"][:3])
        print(f"| {norm} | {r['valid_loss']:.3f} ({r['step']}) | {correct}/{r['gender']['n']} | {answers} "
              f"| {100 * r['variation']:.3g}% |")
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
