"""``speechllm-infer --manifest``: the batched path against the row-by-row loop, side by side.

    OMP_NUM_THREADS=1 python benchmarks/infer_batched.py [--rows 32] [--batch-sizes 16 32] [--dtype auto]
                                                         [--baseline-rows N]

Builds an untrained ``init-model`` checkpoint over the offline Whisper tiny.en + SmolLM2-135M-Instruct
and a manifest of ``--rows`` requests cut from the repository clips (``tests/data/audio``: three
LibriSpeech utterances and a robin; pieces of 2-15 s, five prompts, Whisper's own transcripts, as a
deployment would run), then answers it with ``run_manifest`` row by row (``batch_size=1``, the
loop before batching, once with Hugging Face's Whisper generate as before the Whisper fast path
and once with it) and batched, in one process, one after the other, greedy, at most
``--new-tokens`` tokens. Prints rows per CPU second and per wall second, the ratios, how many
answers are identical to the row-by-row ones, peak memory and the machine (the load average
before and after; the machine may be shared, so CPU seconds are the figure to compare).
``--baseline-rows N`` runs the two row-by-row paths on the first N rows only (their cost per row
does not depend on the manifest's size) and the batched ones on all ``--rows``; answers are
compared on those N rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import Clock, describe_machine, peak_rss_mib  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIPS = ["198-209-0000.ogg", "3436-172162-0000.ogg", "5703-47212-0000.ogg", "robin-chirp.ogg"]
PROMPTS = ["What can you hear from the audio?", "Transcribe the audio.", "Is the speaker male or female?",
           "Describe the speaker's voice in one sentence.", "What is the speaker talking about?"]


def write_manifest(folder: Path, rows: int) -> Path:
    """``rows`` requests: pieces of the repository clips (2-15 s, varied starts), one prompt each."""
    import soundfile as sf

    from speechllm.audio import load_audio

    waves = [load_audio(REPO / "tests" / "data" / "audio" / name) for name in CLIPS]
    lines = []
    for i in range(rows):
        wave = waves[i % len(waves)]
        seconds = 2.0 + (i * 7.3) % 13.0
        start = int((i * 0.9) % max(0.1, len(wave) / 16_000 - 2.0) * 16_000)
        piece = wave[start:start + int(seconds * 16_000)]
        path = folder / f"r{i:03d}.wav"
        sf.write(path, piece, 16_000)
        lines.append({"id": f"r{i:03d}", "audio": path.name, "prompt": PROMPTS[i % len(PROMPTS)]})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where fast) or fp32")
    parser.add_argument("--baseline-rows", type=int, default=None,
                        help="row-by-row paths on the first N rows only (default: all rows)")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    from speechllm.assets import install_asset
    from speechllm.cli import main as cli
    from speechllm.infer import GenerationOptions, load_model, run_manifest

    for name in ("whisper-tiny.en", "smollm2-135m-instruct"):
        install_asset(name)
    print("machine:", describe_machine())
    work = Path(tempfile.mkdtemp(prefix="infer_batched_"))
    ckpt = work / "ckpt"
    if cli(["init-model", "--encoder", "offline:whisper-tiny.en", "--llm", "offline:smollm2-135m-instruct",
            "--adapter", "qformer", str(ckpt), "transcript_source=whisper"]):
        return 1
    manifest = write_manifest(work, args.rows)
    model = load_model(ckpt, dtype=args.dtype)
    print(f"{args.rows} rows, {args.new_tokens} new tokens at most, greedy, dtype "
          f"{next(model.llm.parameters()).dtype}, one thread; rss after load {peak_rss_mib():.0f} MiB")
    options = GenerationOptions(max_new_tokens=args.new_tokens)
    run_manifest(model, manifest, work / "warm.jsonl", options, progress=False, limit=2)  # loads silero-vad etc.

    # (name, batch size, Whisper fast path): the first row is the loop as it was before batching
    # and before the Whisper fast path (HF generate for the transcript).
    paths = [("row by row, HF Whisper (before)", 1, False), ("row by row", 1, True)]
    paths += [(f"batched, --batch-size {b}", b, True) for b in args.batch_sizes]
    results = {}
    for name, batch_size, fast in paths:
        out = work / f"out-{len(results)}.jsonl"
        model.transcriber.fast = fast
        limit = args.baseline_rows if batch_size == 1 else None
        with Clock() as clock:
            summary = run_manifest(model, manifest, out, options, progress=False, batch_size=batch_size,
                                   limit=limit)
        answers = {r["id"]: r.get("response") for r in map(json.loads, out.read_text().splitlines())}
        results[name] = (clock, summary, answers, peak_rss_mib())
        print(f"  {name}: {summary.written} rows, {clock.cpu:.1f} CPU s, {clock.wall:.1f} wall s, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    model.transcriber.fast = True

    base_clock, base_summary, base_answers, _ = results[paths[0][0]]
    base_cpu, base_wall = base_summary.written / base_clock.cpu, base_summary.written / base_clock.wall
    print(f"\n{'path':32s} {'rows/CPU-s':>11s} {'rows/wall-s':>12s} {'vs before (CPU)':>16s} "
          f"{'(wall)':>8s} {'same answers':>13s} {'peak RSS MiB':>13s}")
    for name, (clock, summary, answers, rss) in results.items():
        same = sum(answers[k] == base_answers[k] for k in base_answers)
        print(f"{name:32s} {summary.written / clock.cpu:11.3f} {summary.written / clock.wall:12.3f} "
              f"{summary.written / clock.cpu / base_cpu:15.2f}x {summary.written / clock.wall / base_wall:7.2f}x "
              f"{same:>6d} of {len(base_answers):<3d} {rss:13.0f}")
    print("machine after:", describe_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
