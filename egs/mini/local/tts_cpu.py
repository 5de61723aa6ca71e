"""CPU seconds per second of audio of the natural voices, uncached (what a first run of stage 1 pays).

Synthesises the first N rows of one engine in the manifests again with ``cache=None`` in this
process, divides the CPU time (all threads, model load included) by the audio length, and
multiplies it by the seconds of that engine's speech in all the manifests: the CPU cost of
synthesising them uncached.

    python egs/mini/local/tts_cpu.py dump/mini/data/{train,dev,test}.jsonl --engine kokoro --rows 8
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifests", type=Path, nargs="+", help="synth manifests (speaker = voice id, synth.speed)")
    ap.add_argument("--engine", default="kokoro", help="tts_engine of the rows to time (kokoro or piper)")
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    from speechllm.data.tts import natural_voices, synthesize_natural

    voices = {v.id: v for v in natural_voices()}
    every = [json.loads(line) for path in args.manifests
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    every = [r for r in every if r.get("attributes", {}).get("tts_engine") == args.engine]
    rows = every[: args.rows]
    if not rows:
        raise SystemExit(f"{' '.join(map(str, args.manifests))}: no rows with tts_engine {args.engine}")
    spent = audio = 0.0
    for row in rows:
        start = cpu_seconds()
        wave = synthesize_natural(voices[row["speaker"]], row["transcript"], speed=row["synth"]["speed"],
                                  cache=None, sample_rate=16000)
        spent += cpu_seconds() - start
        audio += len(wave) / 16000
    print(f"{args.engine}: {len(rows)} clips, {audio:.1f} s of audio, {spent:.1f} CPU s "
          f"({spent / audio:.2f} CPU s per second of audio, model load included); all {len(every)} rows: "
          f"{sum(r['duration'] for r in every):.0f} s of audio, about "
          f"{spent / audio * sum(r['duration'] for r in every):.0f} CPU s uncached")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
