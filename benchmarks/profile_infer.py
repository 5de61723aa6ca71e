"""Where the CPU seconds of batched inference go, component by component.

    OMP_NUM_THREADS=1 python benchmarks/profile_infer.py [--rows 32] [--batch-size 32] [--dtype auto] [--ops]

The manifest and checkpoint of ``infer_batched.py`` (untrained ``init-model`` over the offline
Whisper tiny.en + SmolLM2-135M-Instruct; ``--rows`` pieces of the repository clips, 2-15 s, five
prompts, Whisper's own transcripts), answered once by ``run_manifest(batch_size=...)`` after a
warm-up. Each component's CPU seconds are measured exclusively (a component called inside another
is taken out of the outer one's time) by wrapping the functions that do it:

- audio loading / resampling (``speechllm.audio.load_audio``), the VAD (``has_speech``);
- log-mel features (``WhisperTapEncoder.mel``), the encoder forward (``forward_mel``);
- Whisper's transcript decode (``WhisperTranscriber.decode``);
- the adapter (``SpeechLLM.audio_vectors``), chat rendering and tokenisation (``render_chat``,
  ``SpeechLLM.sequence``, the transcript's tokenisation), the output detokenisation;
- the LLM's forwards: prefill (more than one position per row, the shared prefix included) and
  one-token decode steps;
- the rest of the run: Python, sampling, cache bookkeeping, writing rows.

Then each compute component's FLOPs (``torch.utils.flop_counter`` on a second, unmeasured pass)
give GFLOP per CPU second against the bf16 matmul peak of this thread. ``--ops`` adds the top
operators of the encoder forward and the transcript decode (torch.profiler). ``--window-costs``
times the encoder forward on 8 windows cut to 10, 20 and 30 s of mel frames: what a shorter
window would save (not an option of the model: Whisper reads 30 s, and the features would change).
``--pass-sizes 4 8 16 32`` answers the manifest with each number of requests per encoder / Whisper
pass (``speechllm.infer.batched.PREPARE_ROWS``) and prints the prepare step's CPU seconds per row.
One thread; CPU seconds, so other load on a shared machine does not count.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import Clock, describe_machine, matmul_peak_gflops  # noqa: E402

COMPONENTS = ("audio load", "VAD", "log-mel", "encoder forward", "Whisper transcript decode", "adapter",
              "render + tokenise", "LLM prefill", "LLM decode steps", "detokenise")


class Ledger:
    """Exclusive CPU seconds (and call counts) per component, with nesting: the innermost wins."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.flops: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = time.process_time()
        self.counter = None  # a FlopCounterMode on the counting pass

    def _switch(self, to: str | None) -> None:
        now = time.process_time()
        if self.stack:
            self.cpu[self.stack[-1]] += now - self.mark
        self.mark = now

    @contextlib.contextmanager
    def within(self, name: str):
        self._switch(name)
        self.stack.append(name)
        self.calls[name] += 1
        before = self._flops()
        try:
            yield
        finally:
            if self.counter is not None and (not self.stack[:-1] or name not in self.stack[:-1]):
                self.flops[name] += self._flops() - before
            self._switch(None)
            self.stack.pop()

    def _flops(self) -> float:
        return float(self.counter.get_total_flops()) if self.counter is not None else 0.0

    def wrap(self, owner, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.within(name):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)


def instrument(model, ledger: Ledger) -> None:
    """Wrap the functions that do each component (see the module docstring)."""
    import speechllm.audio as audio
    import speechllm.models.chat_layout as layout
    import speechllm.models.transcript as transcript
    from speechllm.models.encoder import WhisperTapEncoder
    from speechllm.models.speech_llm import SpeechLLM

    ledger.wrap(audio, "load_audio", "audio load")
    ledger.wrap(transcript, "has_speech", "VAD")
    ledger.wrap(WhisperTapEncoder, "mel", "log-mel")
    ledger.wrap(WhisperTapEncoder, "forward_mel", "encoder forward")
    ledger.wrap(transcript.WhisperTranscriber, "decode", "Whisper transcript decode")
    ledger.wrap(SpeechLLM, "audio_vectors", "adapter")
    ledger.wrap(layout, "render_chat", "render + tokenise")
    ledger.wrap(SpeechLLM, "sequence", "render + tokenise")
    ledger.wrap(model.tokenizer, "decode", "detokenise")
    ledger.wrap(model.tokenizer, "batch_decode", "detokenise")

    llm = model.base_causal_lm()
    original = llm.forward

    @functools.wraps(original)
    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        one = ids is not None and ids.shape[1] == 1
        with ledger.within("LLM decode steps" if one else "LLM prefill"):
            return original(*args, **kwargs)

    llm.forward = forward


def op_table(fn, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=44)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where fast) or fp32")
    parser.add_argument("--ops", action="store_true", help="top operators of the encoder and the transcript decode")
    parser.add_argument("--window-costs", action="store_true", help="encoder forward on 10 / 20 / 30 s windows")
    parser.add_argument("--pass-sizes", type=int, nargs="*", default=[],
                        help="requests per encoder / Whisper pass to compare (e.g. 4 8 16 32)")
    args = parser.parse_args()

    import torch
    from infer_batched import write_manifest
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    from torch.utils.flop_counter import FlopCounterMode

    from speechllm.assets import install_asset
    from speechllm.cli import main as cli
    from speechllm.infer import GenerationOptions, load_model, run_manifest

    for name in ("whisper-tiny.en", "smollm2-135m-instruct"):
        install_asset(name)
    print("machine:", describe_machine(peak=False))
    peak = matmul_peak_gflops()["bf16" if args.dtype != "fp32" else "fp32"]
    work = Path(tempfile.mkdtemp(prefix="profile_infer_"))
    ckpt = work / "ckpt"
    if cli(["init-model", "--encoder", "offline:whisper-tiny.en", "--llm", "offline:smollm2-135m-instruct",
            "--adapter", "qformer", str(ckpt), "transcript_source=whisper"]):
        return 1
    manifest = write_manifest(work, args.rows)
    model = load_model(ckpt, dtype=args.dtype)
    options = GenerationOptions(max_new_tokens=args.new_tokens)
    run_manifest(model, manifest, work / "warm.jsonl", options, progress=False, limit=4, batch_size=args.batch_size)
    ledger = Ledger()
    instrument(model, ledger)
    ledger.mark = time.process_time()
    with Clock() as clock:
        summary = run_manifest(model, manifest, work / "out.jsonl", options, progress=False,
                               batch_size=args.batch_size)
    dtype = next(model.llm.parameters()).dtype
    print(f"{summary.written} rows, batch size {args.batch_size}, at most {args.new_tokens} new tokens, greedy, "
          f"{dtype}, one thread: {clock.cpu:.2f} CPU s ({summary.written / clock.cpu:.3f} rows/CPU-s), "
          f"{clock.wall:.2f} wall s")
    cpu = dict(ledger.cpu)
    calls = dict(ledger.calls)
    # The counting pass: same run, FLOPs per component (its times are not used).
    ledger.cpu.clear()
    counter = FlopCounterMode(display=False)
    ledger.counter = counter
    with counter:
        run_manifest(model, manifest, work / "count.jsonl", options, progress=False, batch_size=args.batch_size)
    ledger.counter = None
    flops = dict(ledger.flops)
    rest = clock.cpu - sum(cpu.values())
    print(f"\n{'component':28s} {'CPU s':>7s} {'share':>6s} {'per row':>8s} {'calls':>6s} {'GFLOP':>7s} "
          f"{'GFLOP/CPU-s':>12s} {'of peak':>8s}")
    for name in COMPONENTS:
        s = cpu.get(name, 0.0)
        g = flops.get(name, 0.0) / 1e9
        rate = g / s if s and g else 0.0
        print(f"{name:28s} {s:7.2f} {100 * s / clock.cpu:5.1f}% {s / summary.written:8.3f} {calls.get(name, 0):6d} "
              f"{g:7.1f} {rate:12.0f} {100 * rate / peak:7.0f}%")
    print(f"{'rest (Python, sampling, I/O)':28s} {rest:7.2f} {100 * rest / clock.cpu:5.1f}% "
          f"{rest / summary.written:8.3f}")
    total_g = sum(flops.values()) / 1e9
    print(f"{'total':28s} {clock.cpu:7.2f} 100.0% {clock.cpu / summary.written:8.3f} {'':6s} {total_g:7.1f} "
          f"{total_g / clock.cpu:12.0f} {100 * total_g / clock.cpu / peak:7.0f}%   (peak {peak:.0f} GFLOP/CPU-s)")

    if args.ops:
        from speechllm.audio import load_audio

        waves = [load_audio(p) for p in sorted(work.glob("r0*.wav"))[:8]]
        enc = model.encoder
        mel = enc.mel(waves)
        with torch.inference_mode():
            _, final = enc.forward_mel(mel, need_final=True)
            print("\n== encoder forward, 8 windows")
            print(op_table(lambda: enc.forward_mel(mel, need_final=True)))
            print("== Whisper transcript decode, 8 windows")
            print(op_table(lambda: model.transcriber.decode(final)))
    if args.window_costs:
        from speechllm.audio import load_audio

        waves = [load_audio(p) for p in sorted(work.glob("r0*.wav"))[:8]]
        mel = model.encoder.mel(waves)
        print("\nencoder forward (4 blocks + final states), 8 windows, CPU s per window:")
        with torch.inference_mode():
            for seconds in (10, 20, 30):
                cut = mel[..., : seconds * 100]
                model.encoder.forward_mel(cut, need_final=True)
                with Clock() as c:
                    model.encoder.forward_mel(cut, need_final=True)
                print(f"  {seconds:2d} s window ({seconds * 50} frames): {c.cpu / 8:.3f}")
    if args.pass_sizes:
        from speechllm.infer import batched

        default = batched.PREPARE_ROWS
        print("\nrequests per encoder / Whisper pass (PREPARE_ROWS; default "
              f"{default}): prepare CPU s per row, whole run CPU s per row")
        for size in args.pass_sizes:
            batched.PREPARE_ROWS = size
            with Clock() as c:
                timings = batched.BatchedTimings()
                original = batched.generate_batched

                def counted(*a, _original=original, _timings=timings, **kw):
                    return _original(*a, timings=_timings, **kw)

                batched.generate_batched = counted
                try:
                    done = run_manifest(model, manifest, work / f"pass{size}.jsonl", options, progress=False,
                                        batch_size=args.batch_size).written
                finally:
                    batched.generate_batched = original
            print(f"  {size:3d}: prepare {timings.prepare_cpu_s / done:.3f}, total {c.cpu / done:.3f}")
        batched.PREPARE_ROWS = default
    print("machine after:", describe_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
