"""Offline smoke run: transcribe a real clip with the converted Whisper tiny.en and ask the
converted SmolLM2 a question. Needs `speechllm assets install whisper-tiny.en smollm2-135m-instruct`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizerFast,
)

from speechllm.assets import resolve_model
from speechllm.audio import load_audio

torch.set_num_threads(1)
repo = Path(__file__).resolve().parents[1]
clip = Path(sys.argv[1]) if len(sys.argv) > 1 else repo.parent / "shared" / "audio" / "198-209-0000.ogg"

whisper_dir = resolve_model("offline:whisper-tiny.en")
t0 = time.perf_counter()
asr = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
features = WhisperFeatureExtractor.from_pretrained(whisper_dir)(
    load_audio(clip), sampling_rate=16_000, return_tensors="pt"
).input_features
with torch.inference_mode():
    ids = asr.generate(features, max_new_tokens=128)
text = WhisperTokenizerFast.from_pretrained(whisper_dir).batch_decode(ids, skip_special_tokens=True)[0]
print(f"[whisper-tiny.en, {time.perf_counter() - t0:.1f} s] {clip.name}: {text.strip()}")

llm_dir = resolve_model("offline:smollm2-135m-instruct")
t0 = time.perf_counter()
tok = AutoTokenizer.from_pretrained(llm_dir)
llm = AutoModelForCausalLM.from_pretrained(llm_dir).eval()
question = "What is the capital of France?"
inputs = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                 return_tensors="pt", return_dict=True)
with torch.inference_mode():
    out = llm.generate(**inputs, max_new_tokens=32, do_sample=False)
answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(f"[smollm2-135m-instruct, {time.perf_counter() - t0:.1f} s] {question} -> {answer.strip()}")
