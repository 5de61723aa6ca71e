"""Per-row faithfulness verdicts: invented speakers on non-speech, contradicted labels on speech."""

from __future__ import annotations

import pytest

from speechllm.generate.faithful import names_a_speaker, says_no_speech, unfaithful_reason

SPEECH = {"attributes": {"gender": "female", "accent": "British", "contains_speech": True},
          "provenance": {"gender": "corpus", "accent": "corpus"}, "transcript": "He came home late."}
SOUND = {"attributes": {"contains_speech": False, "sound": "music"}, "provenance": {"contains_speech": "corpus"}}


@pytest.mark.parametrize("response,reason", [
    ("The speaker is male.", "non-speech: names a gender"),
    ("The speaker has a Southern accent.", "non-speech: names an accent"),
    ("She sounds calm.", "non-speech: names a gender"),
    ("The audio is music, and there is no speech.", None),
    ("The text describes a sound clip with no speech.", None),
    ("", "empty response"),
])
def test_non_speech_rows_must_not_invent_a_speaker(response, reason):
    assert unfaithful_reason(SOUND | {"response": response}) == reason


@pytest.mark.parametrize("response,reason", [
    ("The speaker is female, with a British accent.", None),
    ('She says "He came home late."', None),  # the quoted transcript is not a claim about the speaker
    ("The speaker is male.", "speech: contradicts the gender label"),
    ("The speaker has an American accent.", "speech: contradicts the accent label"),
    ("No, there is no speech in this audio.", "speech: says there is no speech"),
    ("The audio is about a late homecoming.", None),  # states nothing: not a contradiction
])
def test_speech_rows_must_not_contradict_their_labels(response, reason):
    assert unfaithful_reason(SPEECH | {"response": response}) == reason


def test_measured_labels_are_not_held_against_a_response():
    row = SPEECH | {"provenance": {"gender": "annotator:gender"}, "response": "The speaker is male."}
    assert unfaithful_reason(row) is None


def test_speaker_and_no_speech_predicates():
    assert names_a_speaker("A woman is talking.") == "gender"
    assert names_a_speaker("The accent is hard to place.") == "accent"
    assert names_a_speaker("Beeping at a steady rate.") is None
    assert says_no_speech("Nobody is speaking; it is a siren.") and not says_no_speech("A man speaks.")


@pytest.mark.parametrize("response,reason", [
    ("There is no speaker, only music.", None),
    ("The text describes a sound clip with no speech.", None),
    ("The speaker's gender is unknown.", "non-speech: does not say there is no speaker"),
    ("<start_audio>[00:00:00 - 00:00:03]: music (Volume: quiet)", "non-speech: does not say there is no speaker"),
    ("The speaker is male.", "non-speech: names a gender"),
])
def test_non_speech_rows_can_be_required_to_say_no_one_speaks(response, reason):
    assert unfaithful_reason(SOUND | {"response": response}, require_no_speaker=True) == reason
    # Speech rows are judged as without the option.
    assert unfaithful_reason(SPEECH | {"response": "The speaker is female."}, require_no_speaker=True) is None
