"""``speechllm eval`` never ends on one bad item: unreadable audio, audio too long for the model
(the model's own ``AudioTooLongError``) or a prompt that does not fit the layout is a counted,
listed skip in the report, whatever the batch size, and the rerun gets past it too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.audio import AudioError, load_audio
from speechllm.eval.suite import EvalOptions, evaluate
from speechllm.utils.jsonl import read_jsonl

SR = 16_000


def _bench(tmp_path: Path) -> Path:
    t = np.arange(SR) / SR
    sf.write(str(tmp_path / "ok.wav"), (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), SR)
    sf.write(str(tmp_path / "long.wav"), np.tile(0.1 * np.sin(2 * np.pi * 200 * t), 3).astype(np.float32), SR)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rows = [{"id": i, "kind": "label", "instruction": "Emotion?", "audios": [f"{name}.wav"], "reference": "calm"}
            for i, name in (("ok", "ok"), ("long", "long"), ("broken", "broken"))]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class HearingStub:
    """Loads each request's audio and applies the model's length check, as SpeechLLM does."""

    needs_audio = True

    def __init__(self, max_audio_seconds: float = 2.0):
        from speechllm.config import ModelConfig

        self.config = ModelConfig(max_audio_seconds=max_audio_seconds)
        self.calls = 0

    def describe(self):
        return {"type": "stub"}

    def predict(self, requests):
        from speechllm.models.chat_layout import check_audio_length

        self.calls += 1
        for r in requests:
            for i, path in enumerate(r.audios):
                check_audio_length(len(load_audio(path)), self.config, where=f"audio {i}")
        return ["calm" for _ in requests]


def test_model_audio_too_long_is_an_audio_error():
    from speechllm.audio import AudioTooLongError as FileTooLong
    from speechllm.models.chat_layout import AudioTooLongError, check_audio_length

    assert issubclass(AudioTooLongError, AudioError) and AudioTooLongError.kind == "too_long"
    assert AudioTooLongError is FileTooLong  # one class for one fact
    with pytest.raises(AudioError, match=r"^audio 0: 3.0s is longer than model.max_audio_seconds=2s"):
        check_audio_length(3 * SR, HearingStub().config, where="audio 0")


@pytest.mark.parametrize("batch_size", [1, 8])
def test_bad_items_are_counted_listed_skips_and_the_rerun_gets_past_them(tmp_path, batch_size):
    bench = _bench(tmp_path)
    out = tmp_path / "run"
    options = EvalOptions(out_dir=str(out), batch_size=batch_size, progress=False)
    report = evaluate("stub", [f"jsonl:{bench}"], options, predictor=HearingStub())
    section = report["benchmarks"]["jsonl"]
    assert (section["items"], section["answered"]) == (3, 1)
    assert section["skipped"]["too_long_audio"]["ids"] == ["long"]
    assert section["skipped"]["too_long_audio"]["example_error"] == (
        "audio 0: 3.0s is longer than model.max_audio_seconds=2s; cut the audio or raise "
        "model.max_audio_seconds (long audio is processed in 30 s windows, never truncated)")
    assert section["skipped"]["unreadable_audio"]["ids"] == ["broken"]
    assert str(tmp_path / "broken.wav") in section["skipped"]["unreadable_audio"]["example_error"]
    listed = [json.loads(line) for line in (out / "jsonl" / "skipped.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["reason"]) for r in listed) == [("broken", "unreadable_audio"),
                                                              ("long", "too_long_audio")]
    assert all(r["error"] for r in listed)
    md = (out / "report.md").read_text()
    assert "- skipped (too_long_audio): 1 items, e.g. long (first error: audio 0: 3.0s is longer" in md
    assert "`jsonl/skipped.jsonl`" in md

    # The rerun resumes: the answered item is not asked again, the bad ones are skipped again.
    again = evaluate("stub", [f"jsonl:{bench}"], options, predictor=HearingStub())["benchmarks"]["jsonl"]
    assert again["answered"] == 1 and again["skipped"] == section["skipped"]
    assert [json.loads(x)["id"] for x in (out / "jsonl" / "predictions.jsonl").read_text().splitlines()] == ["ok"]


def test_a_prompt_that_does_not_fit_the_layout_is_skipped_not_fatal(tmp_path):
    from speechllm.models.chat_layout import ChatLayoutError

    class LayoutStub(HearingStub):
        def predict(self, requests):
            if any("two" in r.text for r in requests):
                raise ChatLayoutError("2 audio locators for 1 audio")
            return ["calm" for _ in requests]

    rows = [{"id": "a", "kind": "label", "instruction": "one?", "reference": "calm"},
            {"id": "b", "kind": "label", "instruction": "two?", "reference": "calm"}]
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = evaluate("stub", [f"jsonl:{bench}"], EvalOptions(out_dir=str(tmp_path / "o"), batch_size=1,
                                                              progress=False), predictor=LayoutStub())
    section = report["benchmarks"]["jsonl"]
    assert section["answered"] == 1 and section["skipped"]["bad_prompt_layout"]["ids"] == ["b"]


def test_speechllm_checkpoint_skips_its_own_too_long_audio_alone_in_a_batch(tmp_path, tiny_llm_dir,
                                                                           tiny_whisper_dir, capsys):
    from speechllm.cli import main

    ckpt = tmp_path / "ckpt"
    assert main(["init-model", "--encoder", str(tiny_whisper_dir), "--llm", str(tiny_llm_dir), str(ckpt),
                 "max_audio_seconds=2"]) == 0
    bench = _bench(tmp_path)
    rc = main(["eval", "--model", str(ckpt), "--bench", f"jsonl:{bench}", "--out", str(tmp_path / "out"),
               "--batch-size", "1", "--max-new-tokens", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    section = report["benchmarks"]["jsonl"]
    assert section["answered"] == 1
    assert section["skipped"]["too_long_audio"]["ids"] == ["long"]
    assert "longer than model.max_audio_seconds=2s" in section["skipped"]["too_long_audio"]["example_error"]
    assert section["skipped"]["unreadable_audio"]["ids"] == ["broken"]


def test_eval_refuses_a_benchmark_file_inside_its_own_output(tmp_path):
    from speechllm.utils.fs import SameFileError

    bench = tmp_path / "run" / "jsonl" / "predictions.jsonl"
    bench.parent.mkdir(parents=True)
    rows = [{"id": "q", "kind": "label", "instruction": "Say yes.", "reference": "yes"}]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Echo:
        needs_audio = False

        def describe(self):
            return {"type": "echo"}

        def predict(self, requests):
            return ["yes" for _ in requests]

    with pytest.raises(SameFileError, match="the output is the input file"):
        evaluate("echo", [f"jsonl:{bench}"], EvalOptions(out_dir=str(tmp_path / "run"), progress=False),
                 predictor=Echo())
    assert read_jsonl(bench) == rows


