"""Throughput of ``cache-features`` on the CPU: clips per second and multiples of real time.

The frozen encoder is the real offline Whisper tiny.en (``speechllm assets install whisper-tiny.en
smollm2-135m-instruct``; the LLM only shapes the model, it does not run), the audio the
repository's real clips (``tests/data/audio``: three LibriSpeech utterances and a robin chirp),
each listed ``--repeat`` times under its own id, with the transcripts the rows carry (training's
default ``transcript_source: manifest``; no Whisper decoding). One thread. Side by side in one
run: batch 1, batch 8, and the same rows as two shards (``--shard 0/2`` then ``1/2``, one after
the other: the total work of two machines). Each setting builds a fresh cache folder; the
figure is wall time of ``build_cache`` (audio decoding, log-mel, encoder, fp16 write). The
machine line says what else was running (the load average).

    OMP_NUM_THREADS=1 python benchmarks/cache_features_throughput.py [--repeat 6]
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
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=6, help="times each clip is listed (default: 6)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from speechllm.audio import load_audio
    from speechllm.config import RunConfig
    from speechllm.models import SpeechLLM
    from speechllm.train.feature_cache import build_cache

    audio_dir = REPO / "tests" / "data" / "audio"
    clips = sorted(audio_dir.glob("*.ogg"))
    seconds = {c: len(load_audio(str(c))) / 16000 for c in clips}
    cfg = RunConfig()
    cfg.model.encoder, cfg.model.llm, cfg.model.dtype = "offline:whisper-tiny.en", "offline:smollm2-135m-instruct", "fp32"
    cfg.model.use_vad = False
    model = SpeechLLM.from_config(cfg.model, device="cpu", dtype="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for r in range(args.repeat):
            for c in clips:
                text = c.with_suffix(".txt").read_text(encoding="utf-8").strip()
                rows.append({"id": f"{c.stem}-{r}", "audio": str(c), "transcript": text,
                             "messages": [{"role": "user", "content": "<|AUDIO|>\nWhat can you hear?"}],
                             "response": "x"})
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
        total_audio = args.repeat * sum(seconds.values())
        build_cache(model, [str(rows_file)], Path(tmp) / "warm", batch_size=8, progress=False)  # warm-up
        print(f"{os.cpu_count()} cores; load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
              + f"; torch {torch.__version__}, {torch.get_num_threads()} thread")
        print(f"{len(rows)} clips, {total_audio:.1f} s of audio (Whisper tiny.en, taps {list(model.encoder.layers)}, "
              "fp32, 1 thread)")
        print("| setting | wall s | clips/s | x real time |")
        print("| --- | ---: | ---: | ---: |")
        for name, batch, shards in (("batch 1", 1, 1), ("batch 8", 8, 1), ("2 shards, batch 8", 8, 2)):
            out = Path(tmp) / name.replace(" ", "_").replace(",", "")
            t0 = time.perf_counter()
            cached = 0
            for i in range(shards):
                cached += build_cache(model, [str(rows_file)], out, batch_size=batch, progress=False,
                                      shard=(i, shards))["cached"]
            wall = time.perf_counter() - t0
            assert cached == len(rows), (name, cached)
            print(f"| {name} | {wall:.2f} | {len(rows) / wall:.2f} | {total_audio / wall:.1f} |")
        print("load after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
