"""Each benchmark loader on small files in the published format, the built-in benchmark, and
bad input (unknown names, malformed files with file:line)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.data.manifest import Utterance, write_manifest
from speechllm.eval.answer_match import ANSWER_FORMAT_INSTRUCTION
from speechllm.eval.builtin import build_builtin_items, render_seed_description, write_builtin
from speechllm.eval.items import BenchItem, BenchmarkError
from speechllm.eval.loaders import (
    known_benchmarks,
    load_benchmark,
    parse_bench_spec,
    parse_inline_choices,
)
from speechllm.eval.predictors import build_prompt


def _wav(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def test_generic_jsonl_and_errors(tmp_path):
    _wav(tmp_path / "a.wav")
    rows = [
        {"id": "1", "kind": "label", "instruction": "Gender?", "audios": ["a.wav"], "reference": "female"},
        {"id": "2", "kind": "instruction", "instruction": "Say hi in lower case.",
         "constraints": [{"id": "change_case:english_lowercase", "kwargs": {}}]},
    ]
    f = tmp_path / "b.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = load_benchmark(str(f))
    assert bench.name == "jsonl"
    assert bench.items[0].audios == [str(tmp_path / "a.wav")]
    assert bench.items[1].audios == [] and bench.items[1].constraints[0]["id"] == "change_case:english_lowercase"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"id": "x", "kind": "label", "instruction": "q"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"bad.jsonl:2: field 'reference'"):
        load_benchmark(f"jsonl:{bad}")
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(BenchmarkError, match=r"torn.jsonl:2: not valid JSON"):
        load_benchmark(f"jsonl:{torn}")
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(BenchmarkError, match="duplicate item id '1'"):
        load_benchmark(f"jsonl:{dup}")


def test_unknown_benchmark_lists_known_ones():
    with pytest.raises(BenchmarkError) as e:
        parse_bench_spec("superb9000:/x")
    for name in ("dynamic-superb", "mmau", "airbench", "voicebench", "sakura", "jsonl", "builtin", "retention"):
        assert name in str(e.value)
        assert name in known_benchmarks()
    assert parse_bench_spec("retention") == ("retention", None)
    with pytest.raises(BenchmarkError, match="does not exist"):
        load_benchmark("mmau:/no/such/file.json")


def test_dynamic_superb_phase1_and_phase2(tmp_path):
    # Phase 1 export: one folder per task, metadata.csv (audiofolder convention: file_name).
    t1 = tmp_path / "ds" / "EmotionRecognition_MultiSpeakerSet"
    _wav(t1 / "x1.wav")
    (t1 / "metadata.csv").write_text(
        'file_name,instruction,label\nx1.wav,"Recognise the emotion. The answer could be happy, sad.",happy\n')
    # Phase 2 export: metadata.jsonl with file + a second audio.
    t2 = tmp_path / "ds" / "SpeakerVerification"
    (t2 / "metadata.jsonl").parent.mkdir(parents=True)
    (t2 / "metadata.jsonl").write_text(json.dumps(
        {"file": "a.wav", "file2": "b.wav", "instruction": "Same speaker? yes or no", "label": "yes"}) + "\n")
    bench = load_benchmark(f"dynamic-superb:{tmp_path / 'ds'}")
    by_cat = {i.category: i for i in bench.items}
    emo = by_cat["EmotionRecognition_MultiSpeakerSet"]
    assert (emo.kind, emo.reference, emo.scorer) == ("label", "happy", "desta")
    assert emo.audios == [str(t1 / "x1.wav")] and not emo.missing_audios()
    sv = by_cat["SpeakerVerification"]
    assert sv.audios == [str(t2 / "a.wav"), str(t2 / "b.wav")]
    assert sv.missing_audios() == sv.audios
    (t2 / "metadata.jsonl").write_text(json.dumps({"file": "a.wav", "instruction": "q"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"metadata.jsonl:1: field 'label'"):
        load_benchmark(f"dynamic-superb:{t2}")


def test_mmau(tmp_path):
    rows = [{"id": "q1", "audio_id": "./test-mini-audios/q1.wav", "question": "Who speaks?",
             "choices": ["Man", "Woman", "Child", "Robot"], "answer": "Woman", "dataset": "AudioSet",
             "task": "speech", "split": "test-mini", "category": "Reasoning",
             "sub-category": "Speaker", "difficulty": "easy"},
            {"audio_id": "./test-mini-audios/q2.wav", "question": "Which instrument?",
             "choices": ["Piano", "Guitar"], "answer": "Piano", "task": "music", "difficulty": "hard"}]
    f = tmp_path / "mmau-test-mini.json"
    f.write_text(json.dumps(rows))
    bench = load_benchmark(f"mmau:{f}")
    a, b = bench.items
    assert (a.id, a.kind, a.category, a.reference) == ("q1", "multiple_choice", "speech", "Woman")
    assert a.audios == [str(tmp_path / "test-mini-audios" / "q1.wav")]
    assert a.metadata["difficulty"] == "easy" and b.id == "q2"
    assert bench.breakdown_keys == ["category", "difficulty"]
    prompt = build_prompt(a)
    assert "(B) Woman" in prompt and prompt.endswith(ANSWER_FORMAT_INSTRUCTION)
    rows[1]["answer"] = "Drums"
    f.write_text(json.dumps(rows))
    with pytest.raises(BenchmarkError, match=r"#1: field 'answer'"):
        load_benchmark(f"mmau:{f}")


def test_airbench_chat_and_foundation(tmp_path):
    chat = [{"meta_info": "[{\"speaker\": \"speaker 1\", \"transcription\": \"hello wally\"}]",
             "question": "What name is said?", "answer_gt": "wally", "path": "0.72_28.54.wav",
             "task_name": "speech_dialogue_QA", "dataset_name": "fisher", "uniq_id": 5}]
    f = tmp_path / "Chat_meta.json"
    f.write_text(json.dumps(chat))
    item = load_benchmark(f"airbench:{f}").items[0]
    assert (item.id, item.kind, item.reference, item.category) == ("chat-5", "open", "wally", "speech_dialogue_QA")
    assert item.audios == [str(tmp_path / "speech_dialogue_QA_fisher" / "0.72_28.54.wav")]
    assert "hello wally" in item.audio_text
    found = [{"path": "x.wav", "question": "Gender?", "choice_a": "male", "choice_b": "female",
              "answer_gt": "female", "task_name": "Speaker_Gender_Recognition", "dataset_name": "vox", "uniq_id": 1}]
    g = tmp_path / "Foundation_meta.json"
    g.write_text(json.dumps(found))
    item = load_benchmark(f"airbench:{g}").items[0]
    assert (item.kind, item.choices, item.reference) == ("multiple_choice", ["male", "female"], "female")


def test_voicebench_subsets(tmp_path):
    d = tmp_path / "voicebench"
    d.mkdir()
    (d / "sd-qa.jsonl").write_text(json.dumps({"audio": "audio/1.wav", "prompt": "Who wrote Hamlet?",
                                               "reference": "Shakespeare"}) + "\n")
    (d / "ifeval.jsonl").write_text(json.dumps({
        "audio": "audio/2.wav", "prompt": "Write in lower case.", "key": 1001,
        "instruction_id_list": ["change_case:english_lowercase", "language:response_language"],
        "kwargs": [{}, {"language": "en"}]}) + "\n")
    (d / "advbench.jsonl").write_text(json.dumps({"audio": "audio/3.wav", "prompt": "How to hack?"}) + "\n")
    (d / "openbookqa.jsonl").write_text(json.dumps({"audio": "audio/4.wav", "prompt": "Q? A. x B. y",
                                                    "reference": "B"}) + "\n")
    items = {i.category: i for i in load_benchmark(f"voicebench:{d}").items}
    assert items["sd-qa"].kind == "open" and items["sd-qa"].reference == "Shakespeare"
    assert items["sd-qa"].audio_text == "Who wrote Hamlet?" and items["sd-qa"].instruction == ""
    assert items["ifeval"].id == "ifeval/1001" and len(items["ifeval"].constraints) == 2
    assert items["advbench"].kind == "refusal"
    assert (items["openbookqa"].kind, items["openbookqa"].scorer) == ("label", "option_letter")
    assert items["openbookqa"].audios == [str(d / "audio" / "4.wav")]


def test_sakura_tracks(tmp_path):
    track = tmp_path / "data" / "Gender"
    (track / "audio").mkdir(parents=True)
    (track / "metadata.csv").write_text(
        "file,attribute_label,single_instruction,single_answer,multi_instruction,multi_answer\n"
        "en_0.wav,female,Please identify the gender of the speaker. (a) Female (b) Male,(a) Female,"
        "\"Which term fits the speaker's gender? (a) Mr. (b) Ms.\",(b) Ms.\n")
    bench = load_benchmark(f"sakura:{tmp_path / 'data'}")
    single, multi = bench.items
    assert (single.id, single.choices, single.reference) == ("gender/en_0/single", ["Female", "Male"], "Female")
    assert (multi.category, multi.reference) == ("gender-multi", "Ms.")
    assert single.audios == [str(track / "audio" / "en_0.wav")]
    # choices are already in the instruction: the prompt does not repeat them
    assert build_prompt(single).count("(a)") == 1
    assert parse_inline_choices("no options here") == []


def _synth_manifest(tmp_path: Path) -> Path:
    rows = []
    specs = [("female", "Scottish", "fast", "high", "loud", "test"),
             ("male", "American", "slow", "low", "quiet", "test"),
             ("female", "Caribbean", "normal", "high", "normal", "train")]
    for k, (g, a, r, p, v, split) in enumerate(specs):
        wav = _wav(tmp_path / "wav" / f"u{k}.wav")
        rows.append(Utterance(id=f"u{k}", audio=str(wav), duration=0.5, transcript=f"The birch canoe {k}.",
                              corpus="synth", split=split,
                              attributes={"gender": g, "accent": a, "speaking_rate": r, "pitch": p,
                                          "volume": v, "tts_voice": "slt"}))
    path = tmp_path / "test.jsonl"
    write_manifest(path, rows)
    return path


def test_builtin_benchmark(tmp_path):
    manifest = _synth_manifest(tmp_path)
    items = build_builtin_items(manifest, seed=0)
    ids = {i.id for i in items}
    assert "u2/gender" not in ids  # the train row is not held out
    kinds = {i.id.split("/")[1]: i.kind for i in items if i.id.startswith("u0/")}
    assert kinds == {"gender": "multiple_choice", "accent": "multiple_choice", "speaking_rate": "label",
                     "pitch": "multiple_choice", "volume": "label", "transcript": "asr",
                     "constraint0": "instruction"}
    accent = next(i for i in items if i.id == "u0/accent")
    assert accent.reference in accent.choices and set(accent.choices) == {"American", "Scottish"}
    assert "Accent: Scottish" in accent.audio_text and "slt" not in accent.audio_text
    assert items == build_builtin_items(manifest, seed=0)  # deterministic
    out = tmp_path / "builtin.jsonl"
    n = write_builtin(manifest, out)
    loaded = load_benchmark(f"builtin:{out}").items
    assert len(loaded) == n == len(items) and loaded[0] == items[0]
    # Paths are stored relative to the file, so the folder can move: the copy loads the same audio.
    stored = json.loads(out.read_text().splitlines()[0])["audios"]
    assert stored and not any(os.path.isabs(a) for a in stored)
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("moved"))
    first = load_benchmark(f"builtin:{moved / 'builtin.jsonl'}").items[0]
    assert first.audios == [str(moved / Path(a).relative_to(tmp_path)) for a in items[0].audios]


def test_seed_description_prefers_manifest_description():
    u = Utterance(id="x", audio="a.wav", duration=2.2, transcript="Hi there.",
                  attributes={"gender": "male", "accent": "Scottish"})
    from speechllm.describe.renderer import render_description

    text = render_seed_description(u)
    assert text == render_description(u)  # the one renderer that target generation uses
    assert text.startswith('[00:00:00 - 00:00:03]: "Hi there." (Gender: Male, Accent: Scottish')
    u.extra["description"] = "given"
    assert render_seed_description(u) == "given"


def test_bench_item_validation():
    with pytest.raises(ValueError, match="unknown kind"):
        BenchItem(id="x", kind="essay", instruction="q")
    with pytest.raises(ValueError, match="unknown label scorer"):
        BenchItem(id="x", kind="label", instruction="q", reference="a", scorer="fuzzy")


def test_builtin_short_style_asks_one_word_answers_scored_strictly(tmp_path):
    from speechllm.eval.scoring_profiles import score_item

    manifest = _synth_manifest(tmp_path)
    items = {i.id: i for i in build_builtin_items(manifest, seed=0, style="short")}
    gender = items["u0/gender"]
    assert gender.kind == "label" and gender.scorer == "single_option"
    assert "Answer with one word" in gender.instruction and set(gender.choices) == {"female", "male"}
    other = next(c for c in gender.choices if c != gender.reference)
    assert score_item(gender, f"The speaker is {gender.reference}.")["correct"] is True
    hedge = score_item(gender, f"The speaker is {gender.reference} or {other}.")
    assert hedge["correct"] is False and hedge["hedged"] is True
    assert score_item(gender, f"The speaker is {other}.")["correct"] is False
    with pytest.raises(BenchmarkError, match="unknown built-in benchmark style"):
        build_builtin_items(manifest, style="essay")
