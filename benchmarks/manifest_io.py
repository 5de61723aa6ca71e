"""Manifest and audio-check throughput: lazy reading, streaming writing, ``validate``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/manifest_io.py [--rows 200000] [--files 200]``.
Prints rows/s and tracemalloc peaks, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf

from speechllm.data import iter_manifest, read_manifest, write_manifest
from speechllm.data.validate import validate_manifest


def timed(fn):
    """Run ``fn`` twice: once timed, once under tracemalloc for the peak (tracemalloc slows
    allocation several times, so the two are not measured together)."""
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000, help="rows in the generated manifest")
    ap.add_argument("--files", type=int, default=200, help="audio files (3 s, 16 kHz) for the audio check")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        big = d / "big.jsonl"
        with open(big, "w") as f:
            for i in range(args.rows):
                f.write(json.dumps({"id": f"utt-{i:08d}", "audio": f"wav/{i}.flac", "duration": 3.2,
                                    "speaker": f"s{i % 500}", "transcript": "a few words of text here",
                                    "attributes": {"gender": "female", "age": 30},
                                    "provenance": {"gender": "corpus", "age": "corpus"}}) + "\n")
        size_mb = big.stat().st_size / 1e6
        print(f"manifest: {args.rows} rows, {size_mb:.1f} MB")
        for label, fn in [
            ("iter_manifest (no id set)", lambda: sum(1 for _ in iter_manifest(big, check_unique_ids=False))),
            ("iter_manifest (unique ids)", lambda: sum(1 for _ in iter_manifest(big))),
            ("read_manifest (list)", lambda: len(read_manifest(big))),
        ]:
            n, s, peak = timed(fn)
            print(f"  {label:28s} {n / s:10.0f} rows/s   peak {peak / 1e6:7.1f} MB")
        _, s, peak = timed(lambda: write_manifest(d / "copy.jsonl", iter_manifest(big, check_unique_ids=False)))
        print(f"  {'write_manifest (streamed)':28s} {args.rows / s:10.0f} rows/s   peak {peak / 1e6:7.1f} MB")
        report, s, _ = timed(lambda: validate_manifest(big, check_audio=False, progress=False))
        print(f"  {'validate --no-check-audio':28s} {report.rows / s:10.0f} rows/s")

        wav = d / "wav"
        wav.mkdir()
        rng = np.random.default_rng(0)
        rows = []
        for i in range(args.files):
            sr = 16_000 if i % 2 else 44_100
            fmt = "flac" if i % 2 else "wav"
            sf.write(wav / f"{i}.{fmt}", (0.1 * rng.standard_normal(3 * sr)).astype(np.float32), sr)
            rows.append(json.dumps({"id": str(i), "audio": f"wav/{i}.{fmt}"}))
        small = d / "audio.jsonl"
        small.write_text("\n".join(rows) + "\n")
        report, s, _ = timed(lambda: validate_manifest(small, progress=False))
        print(f"audio check: {args.files} files x 3 s (half 44.1 kHz wav, half 16 kHz flac): "
              f"{args.files / s:.0f} files/s, {report.total_seconds / s:.0f}x real time, problems: {dict(report.counts)}")


if __name__ == "__main__":
    main()
