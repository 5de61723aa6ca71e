"""The fast decoding paths on the real offline Whisper tiny.en and SmolLM2-135M-Instruct with the
repository clips: Whisper's fast transcript path gives Hugging Face ``generate``'s token ids, and
batched inference gives the sequential path's answers in fp32."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

CLIPS = ["198-209-0000.ogg", "3436-172162-0000.ogg", "5703-47212-0000.ogg", "robin-chirp.ogg"]


@pytest.fixture(scope="module")
def real_checkpoint(offline_whisper_tiny_en, offline_smollm2, tmp_path_factory):
    from speechllm.cli import main

    out = tmp_path_factory.mktemp("real_batched") / "ckpt"
    assert main(["init-model", "--encoder", "offline:whisper-tiny.en", "--llm", "offline:smollm2-135m-instruct",
                 "--adapter", "qformer", str(out), "transcript_source=whisper"]) == 0
    return out


@pytest.fixture(scope="module")
def waves(real_audio_dir):
    from speechllm.audio import load_audio

    return [load_audio(real_audio_dir / name) for name in CLIPS]


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_fast_whisper_transcripts_have_hf_generate_token_ids(real_checkpoint, waves, dtype):
    from speechllm.models import SpeechLLM
    from speechllm.models.transcript import whisper_generate

    model = SpeechLLM.from_pretrained(real_checkpoint, dtype=dtype)
    whisper, tokenizer = model.encoder.whisper, model.encoder.tokenizer
    final = model.encoder.encode(waves, need_final=True).final
    attention = whisper.config._attn_implementation
    for i in (0, 3):  # one window at a time (the single-request path; speech and a bird) ...
        reference = whisper_generate(whisper, tokenizer, encoder_out=final[i:i + 1], fast=False)
        assert whisper_generate(whisper, tokenizer, encoder_out=final[i:i + 1]).tolist() == reference.tolist()
    reference = whisper_generate(whisper, tokenizer, encoder_out=final, fast=False)  # ... and as a batch
    assert whisper_generate(whisper, tokenizer, encoder_out=final).tolist() == reference.tolist()
    assert reference.shape[1] > 40  # real transcripts, not an early end-of-text
    assert whisper.config._attn_implementation == attention  # restored
    assert whisper.generation_config.suppress_tokens  # the model's own lists are put back


def test_batched_answers_equal_sequential_on_real_models_in_fp32(real_checkpoint, waves):
    from speechllm.infer.batched import generate_batched
    from speechllm.models import SpeechLLM

    model = SpeechLLM.from_pretrained(real_checkpoint, dtype="fp32")
    prompts = ["What can you hear from the audio?", "Is the speaker male or female?", "Transcribe the audio.",
               "What can you hear?"]
    convs = [[{"role": "user", "content": p}] for p in prompts]
    sequential = [model.generate(c, [w], max_new_tokens=16, return_batch=True) for c, w in zip(convs, waves)]
    replies = generate_batched(model, convs, [[w] for w in waves], [[None]] * len(waves), max_new_tokens=16,
                               batch_size=4)
    assert [r.response for r in replies] == [text for text, _ in sequential]
    assert [r.transcripts for r in replies] == [batch.transcripts[0] for _, batch in sequential]
    assert replies[3].transcripts == [""] and "adventure" in replies[1].transcripts[0].lower()
