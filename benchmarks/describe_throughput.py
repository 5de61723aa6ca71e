"""Annotation throughput of ``describe`` without ASR, in multiples of real time per core.

Builds a synthetic corpus (flite + espeak-ng), then on ONE thread measures, side by side:
- the whole describe pass (audio decoding + every annotator but ASR + rendering), by CPU time;
- each annotator's share;
- silero-vad's own per-window loop against the batched VAD used here;
- the gender annotator forced to predict (the corpus labels gender, so it normally skips).

Run:  OMP_NUM_THREADS=1 python benchmarks/describe_throughput.py [--num 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ANNOTATORS = ["duration", "vad", "volume", "snr", "gender", "pitch", "speaking_rate"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=200, help="synthetic utterances (default: 200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from speechllm.audio import load_audio
    from speechllm.data.manifest import read_manifest
    from speechllm.data.synth import build_synthetic_corpus
    from speechllm.describe import DescribeConfig
    from speechllm.describe.annotators import AudioClip
    from speechllm.describe.pipeline import UtteranceDescriber
    from speechllm.describe.renderer import render_description

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        t0 = time.perf_counter()
        build_synthetic_corpus(corpus, num=args.num, seed=args.seed, jobs=2, progress=False)
        synth_wall = time.perf_counter() - t0
        utts = read_manifest(corpus / "all.jsonl")
        audio_seconds = sum(u.duration or 0 for u in utts)
        print(f"synth: {len(utts)} utterances, {audio_seconds:.0f} s of audio in {synth_wall:.1f} s wall "
              f"(2 processes)")

        t0 = time.process_time()
        describer = UtteranceDescriber(DescribeConfig(annotators=ANNOTATORS))
        load_cpu = time.process_time() - t0

        # Whole pass, as the pipeline runs it (decode once, every annotator, render).
        t0 = time.process_time()
        for u in utts:
            describer.describe(u)
        total_cpu = time.process_time() - t0

        # Per-annotator shares (a second pass over fresh rows).
        per = defaultdict(float)
        fresh = read_manifest(corpus / "all.jsonl")
        for u in fresh:
            t = time.process_time()
            clip = AudioClip(load_audio(u.audio_path), 16_000)
            per["(decode audio)"] += time.process_time() - t
            for a in describer.annotators:
                t = time.process_time()
                a.annotate(u, clip)
                per[a.name] += time.process_time() - t
            t = time.process_time()
            render_description(u)
            per["(render)"] += time.process_time() - t

        # silero's own loop vs the batched VAD, same audio.
        import silero_vad

        vad = next(a for a in describer.annotators if a.name == "vad").vad
        waves = [load_audio(u.audio_path) for u in utts[:50]]
        vad_audio = sum(w.size for w in waves) / 16_000
        t = time.process_time()
        for w in waves:
            silero_vad.get_speech_timestamps(torch.from_numpy(w), vad._jit, sampling_rate=16_000)
        silero_cpu = time.process_time() - t
        t = time.process_time()
        for w in waves:
            vad.speech_segments(w)
        batched_cpu = time.process_time() - t

        # Gender forced to predict (rows without a gender label).
        gender = next(a for a in describer.annotators if a.name == "gender")
        t = time.process_time()
        for w in waves:
            gender.predict(w, 16_000)
        gender_cpu = time.process_time() - t

    print(f"model loading (once per process): {load_cpu:.2f} s CPU")
    print(f"describe without ASR: {audio_seconds:.0f} s audio in {total_cpu:.2f} s CPU on 1 thread = "
          f"{audio_seconds / total_cpu:.0f}x real time per core")
    print("per annotator (x real time per core; share of the pass):")
    spent = sum(per.values())
    for name, cpu in sorted(per.items(), key=lambda kv: -kv[1]):
        speed = f"{audio_seconds / cpu:.0f}x" if cpu > 0 else "-"
        print(f"  {name:16s} {speed:>9s}  {100 * cpu / spent:5.1f}%")
    print(f"VAD on {vad_audio:.0f} s: silero get_speech_timestamps {vad_audio / silero_cpu:.0f}x, "
          f"batched {vad_audio / batched_cpu:.0f}x real time per core "
          f"({silero_cpu / batched_cpu:.1f}x faster)")
    print(f"gender forced on {vad_audio:.0f} s (unlabelled rows): {vad_audio / gender_cpu:.0f}x real time per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
