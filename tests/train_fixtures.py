"""Shared helpers of the training tests: tiny data rows with audio written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

RESPONSES = [
    "The speaker is a female with a Scottish accent.",
    "The speaker is male and speaks slowly.",
    "A bird is chirping.",
    "The audio contains speech.",
]


def write_rows(folder: Path, n: int = 8, *, seed: int = 0, bad: int = 0, name: str = "targets.jsonl") -> Path:
    """``n`` audio rows (tones + noise of 0.5-1.5 s) in targets.jsonl format; ``bad`` extra rows
    point at a missing file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        dur = 0.5 + (i % 3) * 0.5
        t = np.arange(int(16000 * dur)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.02 * rng.standard_normal(t.size)
        path = folder / f"utt{i}.wav"
        sf.write(path, wave.astype(np.float32), 16000)
        rows.append({
            "id": f"utt{i}", "audio": path.name, "duration": dur, "transcript": "the birch canoe",
            "description": f'[00:00:00 - 00:00:0{int(dur) + 1}]: "the birch canoe" (Gender: Male, Duration: {dur}s)',
            "messages": [{"role": "user", "content": "<|AUDIO|>\nWhat can you hear from the audio?"}],
            "response": RESPONSES[i % len(RESPONSES)],
        })
    for j in range(bad):
        rows.append({"id": f"bad{j}", "audio": f"missing{j}.wav", "duration": 1.0, "transcript": "x",
                     "messages": [{"role": "user", "content": "<|AUDIO|>What is it?"}], "response": "A sound."})
    out = folder / name
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def write_replay(folder: Path, n: int = 6, name: str = "replay.jsonl") -> Path:
    prompts = ["Name a colour.", "Say hello.", "Count to three.", "What is two plus two?", "Name a fruit.", "Say yes."]
    answers = ["Blue.", "Hello!", "1 2 3", "4", "An apple.", "yes"]
    rows = [{"id": f"rp{i}", "kind": "pseudo", "messages": [{"role": "user", "content": prompts[i % 6]}],
             "response": answers[i % 6]} for i in range(n)]
    out = folder / name
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def tiny_run_config(tiny_llm_dir, tiny_whisper_dir, train_files, out_dir, **train_overrides):
    """A RunConfig for a tiny fp32 CPU run (small Q-Former: 8 queries, 1 layer)."""
    from speechllm.config import RunConfig

    cfg = RunConfig()
    m = cfg.model
    m.encoder, m.llm, m.dtype = str(tiny_whisper_dir), str(tiny_llm_dir), "fp32"
    m.num_queries, m.qformer_layers, m.qformer_ffn_dim = 8, 1, 64
    m.use_vad = False
    cfg.data.train = [str(p) for p in train_files]
    cfg.data.max_length = 256
    t = cfg.train
    t.output_dir = str(out_dir)
    t.precision = "fp32"
    t.batch_size = 4
    t.warmup_steps = 2
    t.lr = 3e-3
    t.max_steps = 6
    t.save_every = 0
    t.eval_every = 0
    t.log_every = 1
    t.num_sample_generations = 0
    for k, v in train_overrides.items():
        setattr(t, k, v)
    return cfg
