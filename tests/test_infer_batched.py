"""Batched inference (``speechllm.infer.batched``): the same greedy answers as the sequential path
in fp32, bad requests isolated, and the resumable manifest output unchanged (input order, no
duplicates on resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speechllm.config import ModelConfig

SR = 16_000


def tone(seconds: float, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def noisy_llm_dir(tiny_llm_dir, tmp_path_factory):
    """The tiny random LLM with larger random weights: the plain one only writes newlines under
    greedy decoding (stripped, every answer is ""); this one's answers depend on the input."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in llm.parameters():
            p.normal_(0.0, 0.3)
    out = tmp_path_factory.mktemp("noisy_llm") / "model"
    llm.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llm_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(tiny_whisper_dir, noisy_llm_dir):
    from speechllm.models import SpeechLLM

    config = ModelConfig(encoder=str(tiny_whisper_dir), llm=str(noisy_llm_dir), transcript_source="manifest",
                         dtype="fp32")
    return SpeechLLM.from_config(config, seed=0)


PROMPTS = ["What can you hear? <|AUDIO|>", "<|AUDIO|> Is the speaker male or female?",
           "Describe the audio.", "Transcribe the audio. <|AUDIO|>", "What is the emotion of the speaker?"]


def _requests(n: int):
    convs, waves, texts = [], [], []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        has_audio = "<|AUDIO|>" in prompt
        convs.append([{"role": "user", "content": prompt}])
        waves.append([tone(0.6 + 0.37 * i, 150 + 40 * i, seed=i)] if has_audio else [])
        texts.append(["a low tone" if i % 2 else "the birch canoe slid"] if has_audio else [])
    return convs, waves, texts


def test_batched_greedy_answers_equal_the_sequential_path_in_fp32(model):
    from speechllm.infer.batched import generate_batched

    convs, waves, texts = _requests(7)
    sequential = [model.generate(c, w, t, max_new_tokens=12) for c, w, t in zip(convs, waves, texts, strict=True)]
    attention = model.base_causal_lm().config._attn_implementation
    for batch_size in (3, 16):
        replies = generate_batched(model, convs, waves, texts, max_new_tokens=12, batch_size=batch_size)
        assert [r.error for r in replies] == [None] * 7
        assert [r.response for r in replies] == sequential
        assert all(1 <= r.new_tokens <= 12 for r in replies)
    assert model.base_causal_lm().config._attn_implementation == attention  # restored afterwards
    assert len(set(sequential)) > 1  # the rows differ, so a mix-up between rows would show


def test_a_bad_request_gets_its_error_and_the_others_their_answers(model):
    from speechllm.audio.io import EmptyAudioError
    from speechllm.infer.batched import generate_batched

    convs, waves, texts = _requests(3)
    waves[1] = [np.zeros(0, dtype=np.float32)]
    replies = generate_batched(model, convs, waves, texts, max_new_tokens=5, batch_size=4)
    assert isinstance(replies[1].error, EmptyAudioError) and replies[1].response is None
    for i in (0, 2):
        assert replies[i].error is None
        assert replies[i].response == model.generate(convs[i], waves[i], texts[i], max_new_tokens=5)
        assert replies[i].transcripts == texts[i]


def test_sampled_rows_do_not_depend_on_their_batch_mates(model):
    from speechllm.infer.batched import generate_batched

    convs, waves, texts = _requests(4)
    kw = dict(max_new_tokens=8, temperature=1.0, seed=3)
    together = [r.response for r in generate_batched(model, convs, waves, texts, batch_size=4, **kw)]
    alone = [generate_batched(model, [c], [w], [t], batch_size=1, **kw)[0].response
             for c, w, t in zip(convs, waves, texts, strict=True)]
    assert together == alone


def test_manifest_batched_equals_sequential_in_input_order_and_resumes(tiny_whisper_dir, noisy_llm_dir,
                                                                       tmp_path):
    from speechllm.cli import main

    ckpt = tmp_path / "ckpt"
    assert main(["init-model", "--encoder", str(tiny_whisper_dir), "--llm", str(noisy_llm_dir),
                 "--adapter", "qformer", str(ckpt), "dtype=fp32"]) == 0
    rows = []
    for i in range(9):
        path = tmp_path / f"a{i}.wav"
        sf.write(str(path), tone(0.5 + 0.4 * (8 - i), 120 + 30 * i, seed=i), SR)
        rows.append({"id": f"r{i}", "audio": path.name, "prompt": PROMPTS[i % 2], "transcript": f"word {i}"})
    rows[4]["audio"] = "missing.wav"  # one bad row: an error row, in its place
    manifest = tmp_path / "in.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def infer(out, *extra):
        assert main(["infer", "--model", str(ckpt), "--manifest", str(manifest), "--output", str(out),
                     "--max-new-tokens", "6", *extra]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    sequential = infer(tmp_path / "seq.jsonl", "--batch-size", "1")
    partial = infer(tmp_path / "bat.jsonl", "--batch-size", "4", "--limit", "5")
    assert [r["id"] for r in partial] == [f"r{i}" for i in range(5)]
    batched = infer(tmp_path / "bat.jsonl", "--batch-size", "4")  # resumes: only the rest is answered
    assert [r["id"] for r in batched] == [f"r{i}" for i in range(9)]  # input order, each id once
    assert batched == sequential
    assert batched[4]["error"] == "missing" and "response" not in batched[4]
    assert len({r["response"] for r in batched if "response" in r}) > 2


def test_eval_predictor_answers_through_the_batched_decoder(model, tmp_path):
    from speechllm.eval.predictors import Request, SpeechLLMPredictor

    predictor = SpeechLLMPredictor.__new__(SpeechLLMPredictor)  # the loaded test model, not a folder
    predictor.model, predictor.max_new_tokens, predictor.batch_size = model, 7, 2
    requests = []
    for i in range(3):
        path = tmp_path / f"e{i}.wav"
        sf.write(str(path), tone(0.8 + 0.5 * i, 180 + 60 * i, seed=10 + i), SR)
        requests.append(Request(id=str(i), text=PROMPTS[i], audios=[str(path)]))
    model.config.transcript_source = "none"  # the tiny Whisper's own transcript is noise
    try:
        expected = [model.generate([{"role": "user", "content": r.text}], [sf.read(r.audios[0], dtype="float32")[0]],
                                   max_new_tokens=7) for r in requests]
        assert predictor.predict(requests) == expected
    finally:
        model.config.transcript_source = "manifest"


def test_bf16_inference_runs_the_adapter_under_autocast_as_training_does(tiny_whisper_dir, noisy_llm_dir):
    """In bf16 the (fp32) adapter runs under bf16 autocast, as training's default precision runs
    it; in fp32 it runs in fp32."""
    from speechllm.models import SpeechLLM

    wave = tone(1.3, 200.0, seed=5)
    for dtype in ("bf16", "fp32"):
        config = ModelConfig(encoder=str(tiny_whisper_dir), llm=str(noisy_llm_dir), transcript_source="manifest",
                             dtype=dtype)
        model = SpeechLLM.from_config(config, seed=0)
        assert next(model.adapter.parameters()).dtype == torch.float32
        with torch.inference_mode():
            encoded = model.encoder.encode([wave])
            plain = model.adapter(encoded.taps, encoded.valid_frames)[0][0]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                autocast = model.adapter(encoded.taps, encoded.valid_frames)[0][0]
            got = model.audio_vectors(encoded)
        assert not torch.equal(plain, autocast.float())  # the two differ, so the check below can fail
        assert torch.equal(got, autocast if dtype == "bf16" else plain)
