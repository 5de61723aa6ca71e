"""The chat layout: span lengths, locator placement, rendering, labels, left-padded batches."""

from __future__ import annotations

import pytest

from speechllm.config import ModelConfig
from speechllm.models.chat_layout import (
    IGNORE_INDEX,
    AudioSlot,
    AudioTooLongError,
    ChatLayoutError,
    adapter_output_length,
    audio_span_length,
    build_sequence,
    collate_left_padded,
    prepare_messages,
    render_chat,
    substitute_audio_text,
    transcript_token_ids,
)

SR = 16_000
LOC = "<|AUDIO|>"
WRAPPED = "<start_audio><|AUDIO|><end_audio>"


@pytest.fixture(scope="module")
def tokenizer(tiny_llm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llm_dir)


def test_qformer_span_is_64_per_started_30s_window_plus_truncated_transcript():
    cfg = ModelConfig(adapter="qformer", max_transcript_tokens=100)
    assert adapter_output_length(SR, cfg) == 64
    assert adapter_output_length(30 * SR, cfg) == 64
    assert adapter_output_length(30 * SR + 1, cfg) == 128
    assert adapter_output_length(95 * SR, cfg) == 256
    assert audio_span_length(SR, 7, cfg) == 71
    assert audio_span_length(SR, 250, cfg) == 164  # transcript cut at 100 tokens
    assert audio_span_length(SR, 7, ModelConfig(transcript_source="none")) == 64


def test_mlp_span_counts_real_frames_only():
    cfg = ModelConfig(adapter="mlp", mlp_stack=8)
    # 1 s = 100 mel frames = 50 encoder frames -> ceil(50 / 8) = 7 vectors
    assert adapter_output_length(SR, cfg) == 7
    assert adapter_output_length(30 * SR, cfg) == 188  # ceil(1500 / 8)
    assert adapter_output_length(45 * SR, cfg) == 188 + 94  # second window: 750 frames
    assert audio_span_length(SR, 3, cfg) == 10


def test_audio_longer_than_the_limit_is_an_error_not_a_truncation():
    cfg = ModelConfig(max_audio_seconds=60)
    assert adapter_output_length(60 * SR, cfg) == 128
    with pytest.raises(AudioTooLongError, match="max_audio_seconds"):
        adapter_output_length(61 * SR, cfg)


def test_prepare_messages_prepends_wraps_and_checks_counts():
    cfg = ModelConfig()
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is this?"}]
    out = prepare_messages(msgs, 2, cfg)
    assert out[1]["content"] == WRAPPED + WRAPPED + "\nWhat is this?"
    assert msgs[1]["content"] == "What is this?"  # input untouched
    # an already wrapped locator is not wrapped twice; a bare one is wrapped
    out = prepare_messages([{"role": "user", "content": f"A {WRAPPED} B {LOC}"}], 2, cfg)
    assert out[0]["content"] == f"A {WRAPPED} B {WRAPPED}"
    with pytest.raises(ChatLayoutError, match="2 audio locator"):
        prepare_messages([{"role": "user", "content": f"{LOC}{LOC}"}], 1, cfg)
    with pytest.raises(ChatLayoutError, match="only 1 locator"):
        prepare_messages([{"role": "user", "content": f"{LOC} hi"}], 2, cfg)
    with pytest.raises(ChatLayoutError, match="assistant"):
        prepare_messages([{"role": "user", "content": "x"}, {"role": "assistant", "content": LOC}], 1, cfg)
    # no audio, no locator: text only, unchanged
    assert prepare_messages(msgs, 0, cfg) == msgs


def test_substitute_audio_text_uses_the_same_wrapping():
    cfg = ModelConfig()
    msgs = [{"role": "user", "content": f"First {LOC} then {LOC}?"}]
    out = substitute_audio_text(msgs, ["[desc A]", "[desc B]"], cfg)
    assert out[0]["content"] == "First <start_audio>[desc A]<end_audio> then <start_audio>[desc B]<end_audio>?"
    out = substitute_audio_text([{"role": "user", "content": "Describe."}], ["D"], cfg)
    assert out[0]["content"] == "<start_audio>D<end_audio>\nDescribe."
    bare = ModelConfig(audio_start="", audio_end="")
    assert substitute_audio_text(msgs, ["a", "b"], bare)[0]["content"] == "First a then b?"


def test_text_only_rendering_matches_the_chat_template_token_for_token(tokenizer):
    cfg = ModelConfig()
    msgs = [{"role": "user", "content": "What can you hear from the audio?"}]
    rendered = render_chat(tokenizer, msgs, cfg, num_audios=0, add_generation_prompt=True)
    expected = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    assert rendered.segments == [list(expected)]
    assert all(x == IGNORE_INDEX for x in rendered.segment_labels[0])


def test_locators_split_tokenisation_so_merges_never_cross_them(tokenizer):
    cfg = ModelConfig(audio_start="", audio_end="")
    msgs = [{"role": "user", "content": f"speaker{LOC}speaker and {LOC}."}]
    r = render_chat(tokenizer, msgs, cfg, num_audios=2, add_generation_prompt=True)
    assert r.num_audios == 2
    before, middle, after = (tokenizer.decode(s) for s in r.segments)
    assert before.endswith("user\nspeaker")
    assert middle == "speaker and "
    assert after.startswith(".<|im_end|>")
    # each piece is tokenised on its own
    assert r.segments[1] == tokenizer("speaker and ", add_special_tokens=False)["input_ids"]


def test_labels_cover_assistant_content_and_end_of_turn_only(tokenizer):
    cfg = ModelConfig()
    msgs = [
        {"role": "user", "content": f"{LOC} What is it?"},
        {"role": "assistant", "content": "A bird."},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes, a robin."},
    ]
    r = render_chat(tokenizer, msgs, cfg, num_audios=1, add_generation_prompt=False)
    labelled = [t for seg in r.segment_labels for t in seg if t != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "A bird.<|im_end|>Yes, a robin.<|im_end|>"
    ids = [t for seg in r.segments for t in seg]
    assert tokenizer.decode(ids).count("<|im_end|>") == 5  # system, 2 user, 2 assistant
    # the prompt part of a training example is exactly the inference prompt
    prompt = render_chat(tokenizer, msgs[:1], cfg, num_audios=1, add_generation_prompt=True)
    n = len(prompt.segments[1])
    assert r.segments[0] == prompt.segments[0] and r.segments[1][:n] == prompt.segments[1]


def test_labels_with_a_trimming_template_without_newlines(tokenizer):
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}: {{ m['content'] | trim }}<|im_end|>{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant: {% endif %}"
    )
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = template
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  Hello there.  "}]
    r = render_chat(tok, msgs, ModelConfig(), num_audios=0, add_generation_prompt=False)
    labelled = [t for t in r.segment_labels[0] if t != IGNORE_INDEX]
    assert tok.decode(labelled) == "Hello there.<|im_end|>"


def test_build_sequence_and_left_padded_collate(tokenizer):
    cfg = ModelConfig()
    msgs = [{"role": "user", "content": "Listen."}, {"role": "assistant", "content": "OK."}]
    r = render_chat(tokenizer, msgs, cfg, num_audios=1, add_generation_prompt=False)
    tids = transcript_token_ids(tokenizer, "  the birch canoe  ", cfg)
    assert tids == tokenizer("the birch canoe", add_special_tokens=False)["input_ids"]
    seq = build_sequence(r, [AudioSlot(num_vectors=4, transcript_ids=tids)], placeholder_id=0)
    assert sum(seq.audio_mask) == 4
    assert len(seq) == sum(map(len, r.segments)) + audio_span_length(SR, len(tids), cfg) - 60
    start = len(r.segments[0])
    assert seq.input_ids[start + 4:start + 4 + len(tids)] == tids
    assert all(x == IGNORE_INDEX for x in seq.labels[start:start + 4 + len(tids)])
    short = build_sequence(render_chat(tokenizer, [{"role": "user", "content": "x"}], cfg, num_audios=0,
                                       add_generation_prompt=True), [], placeholder_id=0)
    batch = collate_left_padded([seq, short], pad_id=0)
    width = len(seq)
    assert batch["input_ids"].shape == (2, width)
    pad = width - len(short)
    assert batch["attention_mask"][1, :pad].sum() == 0 and batch["attention_mask"][1, pad:].all()
    assert batch["position_ids"][1, pad:].tolist() == list(range(len(short)))
    assert batch["position_ids"][0].tolist() == list(range(width))
    assert not batch["audio_mask"][1].any()
    with pytest.raises(ChatLayoutError):
        build_sequence(r, [], placeholder_id=0)


def test_desta2_audio_role_layout_puts_each_audio_in_its_own_turn(tokenizer):
    cfg = ModelConfig(audio_role="audio", audio_start="", audio_end="")
    msgs = [{"role": "system", "content": "Focus on the input audio."},
            {"role": "user", "content": f"Describe {LOC} and {LOC} please."}]
    out = prepare_messages(msgs, 2, cfg)
    assert out == [msgs[0], {"role": "audio", "content": LOC}, {"role": "audio", "content": LOC},
                   {"role": "user", "content": "Describe\nand\nplease."}]
    # No locator: one audio turn before the first user turn; a user turn left empty is dropped.
    assert prepare_messages([{"role": "user", "content": "Describe the audio."}], 1, cfg) == [
        {"role": "audio", "content": LOC}, {"role": "user", "content": "Describe the audio."}]
    assert prepare_messages([{"role": "user", "content": LOC}], 1, cfg) == [{"role": "audio", "content": LOC}]
    # DeSTA2's own message form stays as it is.
    desta = [{"role": "audio", "content": LOC}, {"role": "user", "content": "Describe the audio."}]
    assert prepare_messages(desta, 1, cfg) == desta
    r = render_chat(tokenizer, [{"role": "user", "content": "Describe the audio."}], cfg, num_audios=1,
                    add_generation_prompt=True)
    assert f"<|im_start|>audio\n{LOC}<|im_end|>\n<|im_start|>user\nDescribe the audio.<|im_end|>" in r.text
    # The seed description takes the audio's place, in the audio turn (target generation).
    assert substitute_audio_text([{"role": "user", "content": "Describe."}], ["[00:00-00:02] hi"], cfg) == [
        {"role": "audio", "content": "[00:00-00:02] hi"}, {"role": "user", "content": "Describe."}]
    # Default: the audio stays in the user turn, wrapped.
    assert prepare_messages([{"role": "user", "content": "Describe."}], 1, ModelConfig())[0]["content"] == (
        f"{WRAPPED}\nDescribe.")


def test_transcript_rules_desta2_leading_space_desta25_no_speech_space(tokenizer):
    default = ModelConfig()
    assert transcript_token_ids(tokenizer, "", default) == []
    assert transcript_token_ids(tokenizer, "   ", default) == []
    desta2 = ModelConfig(transcript_prefix=" ")
    assert transcript_token_ids(tokenizer, "the birch canoe ", desta2) == tokenizer(
        " the birch canoe", add_special_tokens=False)["input_ids"]
    assert transcript_token_ids(tokenizer, "", desta2) == []
    desta25 = ModelConfig(no_speech_transcript=" ")
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    assert len(space) == 1
    assert transcript_token_ids(tokenizer, "", desta25) == space  # span 64 + 1
    assert transcript_token_ids(tokenizer, None, desta25) == space
    assert transcript_token_ids(tokenizer, " the birch ", desta25) == tokenizer(
        "the birch", add_special_tokens=False)["input_ids"]
    assert audio_span_length(SR, len(transcript_token_ids(tokenizer, "", desta25)), desta25) == 65
    assert transcript_token_ids(tokenizer, "", ModelConfig(no_speech_transcript=" ", transcript_source="none")) == []
