"""Training throughput on CPU: the DeSTA2 reference loop vs this framework's defaults.

Same data (synthetic 1-5 s clips, ~46-token targets), same models (offline Whisper tiny.en +
SmolLM2-135M-Instruct), same adapter (Q-Former, 64 queries x 4 taps, 2 layers, FFN 3072), same
batch size, bf16 autocast, one thread, in one run:

(a) reference, as DeSTA2's trainer runs it: Whisper encoder recomputed every step on 30 s-padded
    input (full encoder, all hidden states), transcripts from the manifest, fixed-size batches in
    random order, full-vocabulary logits at every position, fp32 weights under bf16 autocast.
(b) ``speechllm.train.Trainer`` with its defaults: encoder features cached once (fp16, real frames
    only; the one-off cost is reported separately), the Q-Former cross-attending to the real
    frames only (``qformer_context: valid``) of globally normalised taps, length-bucketed
    batches, LM head only at response positions, frozen weights stored in bf16, no weight
    gradients for frozen parameters.
(c) (b) with DeSTA2's ``qformer_context: window`` (all 1500 frames of each window, padding
    included; the cache then keeps them too): what the Q-Former's padded frames cost.

Throughput is per CPU second of the one-thread process (other load on a shared machine does not
count; wall-clock figures are printed too). FLOPs per step are counted with ``torch.utils.flop_counter`` and set against a measured bf16
matmul peak of this CPU.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

INSTRUCTION = "What can you hear from the audio?"


def response_for(row: dict) -> str:
    a = row.get("attributes", {})
    return (f"The speaker is a {a.get('gender', 'person')} with a {a.get('accent', 'neutral')} accent, speaking "
            f"{a.get('speaking_rate', 'normally')} at a {a.get('pitch', 'medium')} pitch and {a.get('volume', 'normal')} "
            f"volume. They say: \"{row['transcript']}\". The recording is clean and the voice sounds calm.")


def make_data(work: Path, num: int) -> Path:
    synth = work / "synth"
    if not (synth / "all.jsonl").is_file():
        subprocess.run([sys.executable, "-m", "speechllm", "synth", str(synth), "--num", str(num), "--no-progress"],
                       check=True)
    rows = [json.loads(x) for x in (synth / "all.jsonl").read_text().splitlines() if x.strip()]
    out = work / "targets.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for r in rows:
            r = dict(r, audio=str(synth / r["audio"]))
            r["messages"] = [{"role": "user", "content": "<|AUDIO|>\n" + INSTRUCTION}]
            r["response"] = response_for(r)
            f.write(json.dumps(r) + "\n")
    return out


def bf16_peak_gflops(n: int = 2048, reps: int = 10) -> tuple[float, float]:
    out = []
    for dtype in (torch.bfloat16, torch.float32):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t = time.process_time()  # CPU seconds, as the throughput figures
        for _ in range(reps):
            a @ b
        out.append(2 * n**3 * reps / (time.process_time() - t) / 1e9)
    return out[0], out[1]


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ------------------------------------------------------------------ (a) reference loop


class ReferenceLoop:
    def __init__(self, model_cfg, rows_file: Path, batch_size: int, seed: int = 0):
        from speechllm.audio import load_audio
        from speechllm.models import SpeechLLM

        self.model = SpeechLLM.from_config(model_cfg, dtype="fp32", seed=seed)  # fp32 master weights
        self.rows = [json.loads(x) for x in rows_file.read_text().splitlines() if x.strip()]
        self.waves = [load_audio(r["audio"]) for r in self.rows]
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.opt = torch.optim.AdamW(self.model.trainable_parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01)
        self.model.train()

    def encode(self, waves):
        from speechllm.models.encoder import EncodedWindows, cut_windows

        enc = self.model.encoder
        windows, per_audio, valid = cut_windows(waves)
        with torch.autocast("cpu", enabled=False):
            mel = enc.mel(windows)  # the data loader's job in DeSTA2: outside autocast
        with torch.no_grad():
            hs = enc.encoder(mel, output_hidden_states=True).hidden_states  # the full encoder
        return EncodedWindows(taps=[hs[i] for i in enc.layers], final=None, windows_per_audio=per_audio,
                              valid_frames=valid)

    def step(self) -> int:
        from speechllm.models import chat_layout as L
        from speechllm.models.speech_llm import SpeechBatch

        m = self.model
        idx = self.rng.sample(range(len(self.rows)), self.batch_size)  # fixed-size batches, random order
        rows = [self.rows[i] for i in idx]
        waves = [self.waves[i] for i in idx]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            encoded = self.encode(waves)
            seqs = []
            for r, w in zip(rows, waves):
                conv = [*r["messages"], {"role": "assistant", "content": r["response"]}]
                chat = L.render_chat(m.tokenizer, conv, m.config, num_audios=1, add_generation_prompt=False)
                slot = L.AudioSlot(L.adapter_output_length(len(w), m.config),
                                   L.transcript_token_ids(m.tokenizer, r["transcript"], m.config))
                seqs.append(L.build_sequence(chat, [slot], m.pad_id))
            batch = SpeechBatch(**L.collate_left_padded(seqs, m.pad_id), encoded=encoded)
            logits = m.llm(inputs_embeds=m.embed(batch), attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False).logits  # every position
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                     batch.labels[:, 1:].flatten(), ignore_index=L.IGNORE_INDEX)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.trainable_parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return int(batch.attention_mask.sum())


def interleaved(settings: dict, rounds: int, batch_size: int) -> dict:
    """Alternate one step of each setting per round, so that load from other processes on a
    shared machine hits both alike."""
    for fn in settings.values():
        fn()  # warm-up
    totals = {k: [0.0, 0, 0.0] for k in settings}
    for _ in range(rounds):
        for name, fn in settings.items():
            t, c = time.perf_counter(), time.process_time()
            positions = fn()
            totals[name][0] += time.perf_counter() - t
            totals[name][1] += positions
            totals[name][2] += time.process_time() - c
    # CPU seconds of this (one-thread) process: what the step costs without the other load on a
    # shared machine; wall seconds are printed too.
    return {k: {"samples_per_s": rounds * batch_size / cpu, "tokens_per_s": pos / cpu, "s_per_step": cpu / rounds,
                "wall_samples_per_s": rounds * batch_size / dt}
            for k, (dt, pos, cpu) in totals.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/speechllm_train_bench", help="scratch folder (data, cache, run)")
    ap.add_argument("--num", type=int, default=48, help="synthetic utterances")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    from speechllm.config import ModelConfig, RunConfig

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows_file = make_data(work, args.num)
    # offline tiny.en + SmolLM2, DeSTA2's Q-Former as published
    model_cfg = ModelConfig(use_vad=False, adapter_dropout=0.0, qformer_context="window", frame_norm="none")

    ref = ReferenceLoop(model_cfg, rows_file, args.batch_size)

    from speechllm.train import Trainer

    def framework_step(context: str):
        cfg = RunConfig(model=ModelConfig(use_vad=False, adapter_dropout=0.0, qformer_context=context))
        cfg.data.train = [str(rows_file)]
        cfg.data.feature_cache = str(work / f"cache-{context}")
        t = cfg.train
        t.output_dir, t.batch_size, t.max_steps = str(work / f"run-{context}"), args.batch_size, 10**6
        t.save_every = t.eval_every = 0
        t.log_every = 10**6
        t0 = time.perf_counter()
        trainer = Trainer(cfg)  # builds the feature cache on first use
        setup_s[context] = time.perf_counter() - t0
        stream = trainer._micro_batches()

        def step() -> int:
            rec = trainer.train_step([next(stream)])
            return int(rec["tokens"])

        return step

    setup_s: dict[str, float] = {}
    settings = {"a": ref.step, "b": framework_step("valid"), "c": framework_step("window")}
    results = interleaved(settings, args.steps, args.batch_size)
    for name, fn in settings.items():
        results[name]["gflop_per_step"] = count_flops(fn) / 1e9
    a, b, c = results["a"], results["b"], results["c"]
    peak_bf16, peak_fp32 = bf16_peak_gflops()
    print(f"threads {torch.get_num_threads()}; matmul peak measured after the run: bf16 {peak_bf16:.0f} GFLOP/s, "
          f"fp32 {peak_fp32:.0f} GFLOP/s")

    print(f"{'setting':50s} {'samples/s':>10s} {'tokens/s':>10s} {'s/step':>8s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} {'% bf16 peak':>11s}")
    for name, r in (("(a) DeSTA2 reference loop", a), ("(b) speechllm defaults", b),
                    ("(c) (b) with qformer_context=window", c)):
        gfs = r["gflop_per_step"] / r["s_per_step"]
        print(f"{name:50s} {r['samples_per_s']:10.2f} {r['tokens_per_s']:10.0f} {r['s_per_step']:8.2f} "
              f"{r['gflop_per_step']:11.1f} {gfs:8.1f} {100 * gfs / peak_bf16:10.1f}%")
    print(f"speed-up (b)/(a): {b['samples_per_s'] / a['samples_per_s']:.2f}x samples per CPU second; "
          f"{b['wall_samples_per_s'] / a['wall_samples_per_s']:.2f}x samples per wall second "
          f"(a {a['wall_samples_per_s']:.2f}, b {b['wall_samples_per_s']:.2f})")
    print(f"speed-up (c)/(a): {c['samples_per_s'] / a['samples_per_s']:.2f}x samples per CPU second; "
          f"{c['wall_samples_per_s'] / a['wall_samples_per_s']:.2f}x samples per wall second (c {c['wall_samples_per_s']:.2f})")
    print(f"FLOP ratio (a)/(b): {a['gflop_per_step'] / b['gflop_per_step']:.2f}x; "
          f"(a)/(c): {a['gflop_per_step'] / c['gflop_per_step']:.2f}x")
    print(f"one-off setup incl. feature cache of {args.num} clips: (b) {setup_s['valid']:.1f} s, "
          f"(c) {setup_s['window']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
