"""Per-row faithfulness verdicts: invented speakers on non-speech, contradicted labels on speech."""

from __future__ import annotations

import pytest

from speechllm.generate.faithful import (
    copies_description,
    names_a_speaker,
    says_no_speech,
    unfaithful_reason,
)

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


def test_a_speaker_is_invented_by_naming_one_or_by_speaking_of_one():
    from speechllm.generate.faithful import invents_a_speaker

    for reply in ("The speaker is male.", "The audio is from a solo speaker. No other sounds are present.",
                  "The audio is from a normal conversation with no audio effects.", "Someone is talking.",
                  "It is a solo voice."):
        assert invents_a_speaker(reply), reply
    for reply in ("There is no speaker, only music.", "No speech: a siren wails.", "Beeping at a steady rate.",
                  "Nobody is speaking; the voice you hear is no voice at all."):
        assert not invents_a_speaker(reply), reply
    # a transcript that mentions a speaker is not the reply's own claim
    assert not invents_a_speaker('It says "the speaker left".', transcript="the speaker left")


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


SOUND_DESCRIPTION = "[00:00:00 - 00:00:04]: No speech, no speaker, only music. (Volume: normal, Duration: 4s)"


@pytest.mark.parametrize("response,copied", [
    # Seen in egs/synthetic's targets: the description recited with its markup or fields ...
    ("<start_audio>[00:00:00 - 00:00:04]: No speech, no speaker, only music. (Volume: normal, Duration: 4s)", True),
    ("No speech, no speaker, only music. (Volume: normal, Duration: 4s)", True),
    ("<start_audio>[00:00:01]The speaker is male.", True),
    # ... or one of its sentences word for word, and nothing else.
    ("No speech, no speaker, only music.", True),
    # Its own words, even where a few of the description's words recur.
    ("There is no speaker; the audio is music.", False),
    ("Nobody is speaking, I can only hear music playing.", False),
    ("The text describes a recording of no speech, no speaker, only music, played quietly on a piano in a hall.",
     False),
])
def test_copies_description_tells_a_recited_description_from_an_answer(response, copied):
    assert copies_description(response, SOUND_DESCRIPTION) is copied


def test_repeating_the_transcript_is_not_copying_the_description():
    description = ('[00:00:00 - 00:00:03]: "The birch canoe slid on the smooth planks." '
                   "(Gender: Female, Accent: British)")
    transcript = "The birch canoe slid on the smooth planks."
    assert not copies_description('She says "The birch canoe slid on the smooth planks."', description, transcript)
    assert copies_description("The speaker is female. Accent: British", description, transcript)
    # Without the transcript to set aside, eight words in a row from the description are a copy.
    assert copies_description("She says the birch canoe slid on the smooth planks.", description)


def test_reject_copies_rejects_recited_descriptions_on_both_kinds_of_row():
    sound = SOUND | {"description": SOUND_DESCRIPTION}
    recited = "No speech, no speaker, only music. (Volume: normal, Duration: 4s)"
    assert unfaithful_reason(sound | {"response": recited}, require_no_speaker=True) is None
    assert (unfaithful_reason(sound | {"response": recited}, require_no_speaker=True, reject_copies=True)
            == "non-speech: copies the description")
    own = "There is no speaker; the audio is music."
    assert unfaithful_reason(sound | {"response": own}, require_no_speaker=True, reject_copies=True) is None
    speech = SPEECH | {"description": '[00:00:00 - 00:00:02]: "He came home late." (Gender: Female, Accent: British)'}
    assert (unfaithful_reason(speech | {"response": "The speaker is female, Accent: British."}, reject_copies=True)
            == "speech: copies the description")
    assert unfaithful_reason(speech | {"response": "The speaker is a British woman."}, reject_copies=True) is None


def _faithful_targets(tmp_path, *options):
    """Run egs/synthetic/local/faithful_targets.py with --rounds 0 (no re-generation: no LLM)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    rows = [SOUND | {"id": "s1", "description": SOUND_DESCRIPTION,
                     "response": "No speech, no speaker, only music. (Volume: normal, Duration: 4s)"},
            SOUND | {"id": "s2", "description": SOUND_DESCRIPTION, "response": "There is no speaker, only music."},
            SOUND | {"id": "s3", "description": SOUND_DESCRIPTION, "response": "The speaker is male."},
            SPEECH | {"id": "p1", "description": "[00:00:00 - 00:00:02]: x", "response": "The speaker is female."}]
    tmp_path.mkdir()
    described, targets = tmp_path / "described.jsonl", tmp_path / "targets.jsonl"
    for path in (described, targets):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "targets.config.yaml").write_text("{}\n", encoding="utf-8")
    script = Path(__file__).resolve().parents[1] / "egs/synthetic/local/faithful_targets.py"
    subprocess.run([sys.executable, str(script), str(described), str(targets), "--rounds", "0",
                    "--require-no-speaker", *options], check=True, capture_output=True)
    kept = [json.loads(x)["id"] for x in targets.read_text().splitlines()]
    return kept, json.loads((tmp_path / "targets.faithful.json").read_text())


def test_faithful_targets_counts_copies_and_rejects_them_when_asked(tmp_path):
    kept, report = _faithful_targets(tmp_path / "count")
    assert kept == ["s1", "s2", "p1"] and report["kept_copies"] == {"non-speech": 1}
    kept, report = _faithful_targets(tmp_path / "reject", "--reject-copies")
    assert kept == ["s2", "p1"] and report["kept_copies"] == {}
    assert report["final_reasons"] == {"non-speech: copies the description": 1, "non-speech: names a gender": 1}
