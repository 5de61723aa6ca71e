"""``describe`` on audio longer than Whisper's 30 s: every window with speech is transcribed, the
speaking rate and the description's span cover what the transcript heard, and degenerate window
texts (``". . . "`` for near-silence, loops) are left out and counted.

The windowing, rate and dropping logic is tested with a stub in place of Whisper (exact texts);
one integration test runs the real offline whisper-tiny.en on 80 s of concatenated readers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speechllm.audio import measures
from speechllm.data.manifest import Utterance
from speechllm.describe import DescribeConfig, render_description
from speechllm.describe.annotators import AudioClip, build_annotators
from speechllm.describe.annotators.asr import AsrAnnotator, WindowTranscript, transcript_degeneracy

SR = 16_000
SILENCE_DOTS = ". . . " * 160  # what Whisper tiny writes for 30 s of near-silence


def near_silence_then_tones(seconds: float = 75.0, speech_from: float = 35.0) -> np.ndarray:
    """Faint noise, then a loud tone from ``speech_from`` on (the VAD segments are given)."""
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(int(seconds * SR)).astype(np.float32) * 1e-3
    t = np.arange(int((seconds - speech_from) * SR)) / SR
    wave[int(speech_from * SR):] += (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    return wave


def annotate_long(monkeypatch, texts: list[str], segments, config: DescribeConfig | None = None):
    """Run asr + speaking_rate on :func:`near_silence_then_tones` with the given VAD segments;
    Whisper is replaced by a stub whose k-th transcribed window reads ``texts[k]``. Returns the
    row and the seconds of each window the stub was given."""
    seen: list[float] = []

    def transcribe(self, waves, sample_rate=SR):
        out = []
        for wave in waves:
            out.append(WindowTranscript(texts[len(seen)], -2.0, 20))
            seen.append(wave.size / sample_rate)
        return out

    monkeypatch.setattr(AsrAnnotator, "transcribe_windows", transcribe)
    config = config or DescribeConfig()
    wave = near_silence_then_tones()
    u = Utterance(id="long", audio=None, duration=wave.size / SR)
    clip = AudioClip(wave, SR, speech_segments=list(segments))
    u.set_attribute("speech_start", segments[0][0], "annotator:vad")
    u.set_attribute("speech_end", segments[-1][1], "annotator:vad")
    for annotator in build_annotators(["asr", "speaking_rate"], config):
        annotator.load()
        annotator.annotate(u, clip)
    return u, seen


SEGMENTS = [(35.2, 58.0), (59.0, 74.5)]
SPOKEN = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background."]


def test_every_window_with_speech_is_transcribed_and_the_rate_uses_the_same_span(monkeypatch):
    u, seen = annotate_long(monkeypatch, SPOKEN, SEGMENTS)
    # Windows 30-60 s and 60-75 s; 0-30 s holds no speech and is not transcribed (Whisper would
    # invent ". . ." for it).
    assert seen == [30.0, 15.0]
    assert u.transcript == " ".join(SPOKEN)
    assert u.extra["transcript_coverage"] == [[35.2, 74.5]]
    assert u.extra["confidence"]["transcript"] == pytest.approx(float(np.exp(-4.0 / 40)), abs=1e-4)
    syllables = measures.count_syllables(u.transcript)
    assert u.attributes["syllables_per_s"] == pytest.approx(round(syllables / (74.5 - 35.2), 2))
    assert render_description(u).startswith(f'[00:00:35 - 00:01:15]: "{u.transcript}"')
    assert render_description(u.to_dict()) == render_description(u)  # a written row renders the same


def test_degenerate_window_is_dropped_counted_and_left_out_of_rate_and_span(monkeypatch):
    u, _ = annotate_long(monkeypatch, [SILENCE_DOTS, SPOKEN[1]], SEGMENTS)
    assert u.transcript == SPOKEN[1]
    assert u.extra["transcript_dropped"] == [{"start": 30.0, "end": 60.0, "reason": "no_letters"}]
    assert u.extra["transcript_coverage"] == [[60.0, 74.5]]
    syllables = measures.count_syllables(SPOKEN[1])
    assert u.attributes["syllables_per_s"] == pytest.approx(round(syllables / 14.5, 2))
    description = render_description(u)
    assert description.startswith(f'[00:01:00 - 00:01:15]: "{SPOKEN[1]}"') and ". . ." not in description


def test_only_degenerate_windows_leave_no_transcript(monkeypatch):
    u, _ = annotate_long(monkeypatch, [SILENCE_DOTS, "so so so so so so so so so so so so so so"], SEGMENTS)
    assert u.transcript is None and "transcript_coverage" not in u.extra
    assert [d["reason"] for d in u.extra["transcript_dropped"]] == ["no_letters", "loop"]
    assert "syllables_per_s" not in u.attributes
    assert '"' not in render_description(u)


def test_asr_max_seconds_caps_the_transcript_rate_and_span_together(monkeypatch):
    config = DescribeConfig(asr_max_seconds=45.0)
    u, seen = annotate_long(monkeypatch, SPOKEN, SEGMENTS, config)
    assert seen == [15.0]
    assert u.transcript == SPOKEN[0] and u.extra["transcript_coverage"] == [[35.2, 45.0]]
    syllables = measures.count_syllables(SPOKEN[0])
    assert u.attributes["syllables_per_s"] == pytest.approx(round(syllables / 9.8, 2))
    assert render_description(u).startswith("[00:00:35 - 00:00:45]: ")


def test_transcript_degeneracy():
    assert transcript_degeneracy(SILENCE_DOTS) == "no_letters"
    assert transcript_degeneracy("  ") == "empty"
    assert transcript_degeneracy("♪ ♪") == "no_letters"
    assert transcript_degeneracy("thank you " * 12) == "loop"
    assert transcript_degeneracy("No, no, no. I said the birch canoe.") is None


def test_pipeline_counts_dropped_windows(monkeypatch, tmp_path, real_audio_dir):
    import soundfile as sf

    from speechllm.audio import load_audio
    from speechllm.describe.pipeline import describe_manifest

    rng = np.random.default_rng(0)
    readers = [load_audio(real_audio_dir / f) for f in ("198-209-0000.ogg", "3436-172162-0000.ogg")]
    wave = np.concatenate([(rng.standard_normal(35 * SR) * 1e-3).astype(np.float32), *readers])  # 65.7 s
    sf.write(str(tmp_path / "long.wav"), wave, SR)
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "long", "audio": "long.wav"}) + "\n")

    def transcribe(self, waves, sample_rate=SR):
        return [WindowTranscript(SILENCE_DOTS if k == 0 else "Speech.", -1.0, 5) for k in range(len(waves))]

    monkeypatch.setattr(AsrAnnotator, "transcribe_windows", transcribe)
    summary = describe_manifest(tmp_path / "in.jsonl", tmp_path / "out.jsonl",
                                DescribeConfig(annotators=["duration", "vad", "asr", "speaking_rate"]),
                                progress=False)
    assert summary.written == 1 and dict(summary.asr_windows_dropped) == {"no_letters": 1}
    assert any("ASR windows left out of transcripts" in line and "no_letters=1" in line for line in summary.lines())
    (row,) = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert row["transcript"] == "Speech." and row["transcript_dropped"][0]["reason"] == "no_letters"
    assert row["transcript_coverage"][0][0] == 60.0  # the dropped 30-60 s window is not covered


@pytest.mark.integration
def test_real_whisper_transcribes_every_window_of_80_seconds(offline_whisper_tiny_en, real_audio_dir):
    from speechllm.audio import load_audio

    rng = np.random.default_rng(0)
    near_silence = (rng.standard_normal(35 * SR) * 1e-3).astype(np.float32)
    readers = ["198-209-0000.ogg", "3436-172162-0000.ogg", "5703-47212-0000.ogg"]
    wave = np.concatenate([near_silence] + [load_audio(real_audio_dir / f) for f in readers])  # 80.5 s
    config = DescribeConfig(annotators=["duration", "vad", "asr", "speaking_rate"])
    u = Utterance(id="long", audio=None)
    clip = AudioClip(wave, SR)
    for annotator in build_annotators(config.annotators, config):
        annotator.load()
        annotator.annotate(u, clip)
    assert u.provenance["transcript"] == "annotator:asr" and u.extra["confidence"]["transcript"] > 0.5
    text = u.transcript.lower()
    # The first reader starts at 35 s, the last ends at 80 s: both are heard, no dots.
    assert "tilney" in text and "scarlet" in text and ". . ." not in text
    start, end = u.extra["transcript_coverage"][0]
    assert 34.5 < start < 36.5 and end > 79.0
    # Read speech: normal rate (dividing 30 s of text by 45 s of speech read "slow").
    assert u.attributes["speaking_rate"] == "normal"
    assert render_description(u).startswith("[00:00:35 - 00:01:21]: ")
