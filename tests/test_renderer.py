"""The seed-description renderer: golden strings for the DeSTA2 format."""

from __future__ import annotations

import pytest

from speechllm.data.manifest import Utterance
from speechllm.describe import render_description
from speechllm.describe.renderer import TemplateError, format_duration, format_timestamp


def _row(**kw):
    row = {
        "id": "u1",
        "audio": "a.wav",
        "duration": 2.2,
        "transcript": "These days are long gone.",
        "attributes": {"gender": "male", "accent": "Scottish", "age": 20, "emotion": "neutral",
                       "speech_start": 1.2, "speech_end": 1.9},
        "provenance": {"gender": "corpus"},
    }
    row.update(kw)
    return row


def test_desta2_golden_string():
    assert render_description(_row()) == (
        '[00:00:01 - 00:00:02]: "These days are long gone." '
        "(Gender: Male, Age: 20, Accent: Scottish, Emotion: neutral, Duration: 2s)"
    )


def test_utterance_and_row_render_identically():
    row = _row()
    assert render_description(Utterance.from_dict(row)) == render_description(row)


def test_non_speech_has_no_quoted_text():
    row = _row(attributes={"contains_speech": False, "volume": "quiet"}, duration=3.0)
    assert render_description(row) == "[00:00:00 - 00:00:03]: (Volume: quiet, Duration: 3s)"


def test_missing_transcript_and_values_are_left_out():
    row = _row(transcript=None, attributes={"gender": "female", "accent": None, "emotion": ""})
    assert render_description(row) == "[00:00:00 - 00:00:03]: (Gender: Female, Duration: 2s)"


def test_no_attributes_no_parentheses():
    row = {"id": "x", "audio": "a.wav", "transcript": "hello", "attributes": {}}
    assert render_description(row) == '"hello"'


def test_custom_order_and_selection():
    row = _row(attributes={"gender": "male", "pitch": "high", "speaking_rate": "fast", "snr": "low",
                           "tts_voice": "awb"})
    text = render_description(row, attributes=["speaking_rate", "tts_voice", "pitch", "duration"])
    assert text == ('[00:00:00 - 00:00:03]: "These days are long gone." '
                    "(Speaking speed: fast, Tts voice: awb, Pitch: high, Duration: 2s)")


def test_default_order_covers_measured_bins():
    row = _row(attributes={"snr": "high", "volume": "loud", "pitch": "low", "speaking_rate": "slow",
                           "gender": "female"})
    assert render_description(row).endswith(
        "(Gender: Female, Pitch: low, Volume: loud, Speaking speed: slow, SNR level: high, Duration: 2s)"
    )


def test_formatting_helpers():
    assert format_timestamp(3725.9) == "01:02:05"
    assert format_duration(0.64) == "0.6s"
    assert format_duration(2.5) == "2s"  # banker's rounding of round(): 2.5 -> 2
    assert format_duration(13.9) == "14s"


def test_unknown_template_names_known_ones():
    with pytest.raises(TemplateError, match="desta2-v1"):
        render_description(_row(), template="desta9")


def test_v2_says_no_speech_and_what_the_sound_is():
    row = _row(transcript=None, duration=3.6,
               attributes={"contains_speech": False, "sound": "music", "volume": "normal",
                           "gender": "male", "pitch": "high", "snr": "low"})
    # A sound has no speaker: gender, pitch and SNR are left out even when an annotator set them.
    assert render_description(row, "desta2-v2") == (
        "[00:00:00 - 00:00:04]: No speech. (Sound: music, Volume: normal, Duration: 4s)")
    assert "Gender: Male" in render_description(row, "desta2-v1")  # v1 is unchanged


def test_v2_names_noise_and_reverberation():
    attributes = {"gender": "female", "accent": "British", "snr": "low", "snr_db": 4.2,
                  "noise": "pink noise", "reverberation": "strong", "c50_db": 2.1}
    row = _row(attributes=attributes, duration=3.0)
    assert render_description(row, "desta2-v2") == (
        '[00:00:00 - 00:00:03]: "These days are long gone." (Gender: Female, Accent: British, '
        "SNR level: low, Background noise: pink noise, Reverberation: strong, Duration: 3s)")


def test_v2_equals_v1_on_rows_without_its_new_attributes():
    for row in (_row(), _row(transcript=None), _row(attributes={"contains_speech": True, "volume": "loud"})):
        assert render_description(row, "desta2-v2") == render_description(row, "desta2-v1")


def test_v3_says_there_is_no_speaker_and_what_is_heard():
    row = _row(transcript=None, duration=3.6,
               attributes={"contains_speech": False, "sound": "music", "volume": "normal", "gender": "male"})
    assert render_description(row, "desta2-v3") == (
        "[00:00:00 - 00:00:04]: No speech, no speaker, only music. (Volume: normal, Duration: 4s)")
    unknown = _row(transcript=None, duration=2.0, attributes={"contains_speech": False})
    assert render_description(unknown, "desta2-v3") == "[00:00:00 - 00:00:02]: No speech, no speaker. (Duration: 2s)"
    speech = _row(attributes={"gender": "female", "noise": "pink noise", "sound": "ignored"}, duration=3.0)
    assert render_description(speech, "desta2-v3") == render_description(speech, "desta2-v2")
