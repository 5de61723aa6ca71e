"""speechllm-infer latency on a 15 s clip with the offline Whisper tiny.en + SmolLM2-135M, one thread.

    OMP_NUM_THREADS=1 python benchmarks/infer_latency.py [--model CKPT] [--runs 3] [--new-tokens 64]

Prints, for the default dtype (bf16 where the CPU has fast bf16) and fp32 side by side: model load
time, encoder, VAD + ASR, time to first token, decode tokens/s, and the real-time factor (request
time / audio duration) of a request that generates exactly ``--new-tokens`` tokens. Times are
CPU seconds of this (single-threaded) process, so other load on a shared machine does not count;
wall seconds are printed beside them. The transcript's two decoders are timed alone and side by
side, in CPU seconds: Whisper's fast path (``whisper_generate``'s default) and Hugging Face's
``generate`` as it ships (``fast=False``; same token ids), and each request is run with both
(``asr=hf`` rows: the request as it was before the fast path). Also times the CLI end to end (a
fresh `speechllm-infer` process, imports and model load included) and prints the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe_machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "tests" / "data" / "audio" / "3436-172162-0000.ogg"
PROMPT = "What can you hear from the audio?"


class Clock:
    """CPU and wall time of a block."""

    def __enter__(self):
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


def make_checkpoint(out: Path) -> Path:
    from speechllm.cli import main

    rc = main(["init-model", "--encoder", "offline:whisper-tiny.en", "--llm", "offline:smollm2-135m-instruct",
               "--adapter", "qformer", str(out), "transcript_source=whisper"])
    if rc:
        sys.exit(rc)
    return out


def measure(model, wave, new_tokens: int) -> dict[str, float]:
    """One request, broken into stages (CPU seconds) with the model's own timers."""
    from speechllm.infer.runner import _TimingStreamer

    stages: dict[str, float] = {}
    cpu_first: dict[str, float] = {}

    class CpuStreamer(_TimingStreamer):
        def put(self, value):
            super().put(value)
            if self.first_token_time is not None and "t" not in cpu_first:
                cpu_first["t"] = time.process_time()

    streamer = CpuStreamer(model.tokenizer, print_text=False)
    with Clock() as total:
        model.generate([{"role": "user", "content": PROMPT}], [wave], max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, streamer=streamer, timings=stages)
    ttft_cpu = cpu_first["t"] - total.cpu0
    decode_cpu = total.cpu - ttft_cpu
    return {
        "encoder_s": stages["encoder_s"],
        "asr_s": stages["asr_s"],
        "ttft_cpu_s": ttft_cpu,
        "tokens_per_s": (streamer.tokens - 1) / decode_cpu,
        "llm_decode_cpu_s": decode_cpu,  # the LLM's one-token steps after the first token
        "total_cpu_s": total.cpu,
        "total_wall_s": total.wall,
        "rtf": total.cpu / (len(wave) / 16_000),
        "new_tokens": streamer.tokens,
    }


def stage_cpu(model, wave) -> dict[str, float]:
    """CPU seconds of the encoder (4 blocks + final states for the transcript), VAD, and the
    transcript decode with the fast path and with Hugging Face's generate, each alone."""
    from speechllm.models.transcript import has_speech

    t = time.process_time()
    encoded = model.encoder.encode([wave], need_final=True)
    out = {"encoder_cpu_s": time.process_time() - t}
    t = time.process_time()
    has_speech(wave)
    out["vad_cpu_s"] = time.process_time() - t
    for name, fast in (("asr_fast_cpu_s", True), ("asr_hf_cpu_s", False)):
        model.transcriber.fast = fast
        t = time.process_time()
        model.transcriber.decode(encoded.final)
        out[name] = time.process_time() - t
    model.transcriber.fast = True
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint (default: a fresh init-model one)")
    parser.add_argument("--runs", type=int, default=3, help="warm requests per dtype (median reported)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--seconds", type=float, default=15.0, help="clip length")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    from speechllm.assets import install_asset
    from speechllm.audio import load_audio
    from speechllm.models import SpeechLLM
    from speechllm.utils.hardware import default_dtype_name

    for name in ("whisper-tiny.en", "smollm2-135m-instruct"):
        install_asset(name)
    hf_logging.disable_progress_bar()
    tmp = Path(tempfile.mkdtemp(prefix="infer_latency_"))
    ckpt = Path(args.model) if args.model else make_checkpoint(tmp / "ckpt")
    wave = load_audio(CLIP)[: int(args.seconds * 16_000)]
    clip_path = tmp / "clip.wav"
    import soundfile as sf

    sf.write(clip_path, wave, 16_000)
    print(f"clip: {CLIP.name}, first {len(wave) / 16000:.1f} s; {args.new_tokens} new tokens; "
          f"torch threads {torch.get_num_threads()}; default dtype {default_dtype_name()}")

    print("machine:", describe_machine())
    results = {}
    for dtype in dict.fromkeys([default_dtype_name(), "fp32"]):
        with Clock() as load:
            model = SpeechLLM.from_pretrained(ckpt, dtype=dtype)
        with Clock() as cold:
            measure(model, wave, args.new_tokens)
        runs, runs_hf, stages = [], [], []
        for _ in range(args.runs):  # interleaved, so that load on the machine hits all alike
            stages.append(stage_cpu(model, wave))
            runs.append(measure(model, wave, args.new_tokens))
            model.transcriber.fast = False
            runs_hf.append(measure(model, wave, args.new_tokens))
            model.transcriber.fast = True
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med.update({k: statistics.median(r[k] for r in stages) for k in stages[0]})
        med["asr_hf_over_fast"] = med["asr_hf_cpu_s"] / med["asr_fast_cpu_s"]
        med["llm_cpu_s"] = med["total_cpu_s"] - med["encoder_cpu_s"] - med["vad_cpu_s"] - med["asr_fast_cpu_s"]
        med["total_cpu_s (asr=hf)"] = statistics.median(r["total_cpu_s"] for r in runs_hf)
        med["rtf (asr=hf)"] = statistics.median(r["rtf"] for r in runs_hf)
        med["load_cpu_s"], med["load_wall_s"], med["cold_request_cpu_s"] = load.cpu, load.wall, cold.cpu
        results[dtype] = med
        del model

    keys = ["load_cpu_s", "load_wall_s", "cold_request_cpu_s", "encoder_cpu_s", "vad_cpu_s", "asr_fast_cpu_s",
            "asr_hf_cpu_s", "asr_hf_over_fast", "llm_cpu_s", "llm_decode_cpu_s", "encoder_s", "asr_s", "ttft_cpu_s",
            "tokens_per_s",
            "total_cpu_s", "total_cpu_s (asr=hf)", "total_wall_s", "rtf", "rtf (asr=hf)"]
    names = list(results)
    print(f"{'metric':22s}" + "".join(f"{n:>12s}" for n in names) + ("   ratio" if len(names) == 2 else ""))
    for k in keys:
        vals = [results[n][k] for n in names]
        ratio = f"   {vals[1] / vals[0]:.2f}x" if len(vals) == 2 and vals[0] else ""
        print(f"{k:22s}" + "".join(f"{v:12.3f}" for v in vals) + ratio)

    cmd = [sys.executable, "-m", "speechllm", "infer", "--model", str(ckpt), "--audio", str(clip_path),
           "--prompt", PROMPT, "--max-new-tokens", str(args.new_tokens), "--timings"]
    with Clock() as cli:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    child = os.times()
    timing_line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("timings:")), proc.stderr[-300:])
    print(f"CLI end to end (new process, imports + load + request): wall {cli.wall:.2f} s, "
          f"child CPU {child.children_user + child.children_system:.2f} s")
    print(f"CLI {timing_line}")
    print("machine after:", describe_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
