"""The manifest: schema validation, round trips, relative paths, lazy iteration."""

from __future__ import annotations

import json
import tracemalloc
import types

import pytest

from speechllm.data import (
    PROVENANCE_CORPUS,
    ManifestError,
    Utterance,
    annotator_provenance,
    iter_manifest,
    read_manifest,
    write_manifest,
)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_round_trip_keeps_every_field_and_unknown_extras(tmp_path):
    utt = Utterance(
        id="spk1-0001",
        audio=str(tmp_path / "wav" / "a.flac"),
        offset=1.5,
        duration=2.25,
        speaker="spk1",
        transcript="hello there",
        corpus="demo",
        split="train",
        attributes={"gender": "female", "age": 31, "emotion": "happy"},
        provenance={"gender": "corpus", "age": "user", "emotion": annotator_provenance("ser")},
        extra={"description": "a seed", "response": {"text": "hi"}},
    )
    path = tmp_path / "manifest.jsonl"
    assert write_manifest(path, [utt]) == 1
    row = json.loads(path.read_text())
    # Audio under the manifest's folder is written relative to it.
    assert row["audio"] == "wav/a.flac"
    (back,) = read_manifest(path)
    assert back.audio == "wav/a.flac"
    back.audio = utt.audio
    assert back == utt  # every other field comes back as written
    assert back.audio_path == (tmp_path / "wav" / "a.flac").resolve()
    assert back.extra["response"] == {"text": "hi"}


def test_audio_outside_the_manifest_folder_is_written_absolute(tmp_path):
    out = tmp_path / "out"
    utt = Utterance(id="x", audio=str(tmp_path / "corpus" / "x.wav"))
    write_manifest(out / "manifest.jsonl", [utt])
    row = json.loads((out / "manifest.jsonl").read_text())
    assert row["audio"] == str((tmp_path / "corpus" / "x.wav").resolve())
    assert read_manifest(out / "manifest.jsonl")[0].audio_path == (tmp_path / "corpus" / "x.wav").resolve()


def test_relative_audio_resolves_against_the_manifest_folder_not_the_cwd(tmp_path, monkeypatch):
    write_rows(tmp_path / "m.jsonl", [{"id": "a", "audio": "clips/a.wav"}])
    monkeypatch.chdir("/")
    (utt,) = read_manifest(tmp_path / "m.jsonl")
    assert utt.audio_path == tmp_path.resolve() / "clips" / "a.wav"


def test_minimal_row_gets_defaults(tmp_path):
    write_rows(tmp_path / "m.jsonl", [{"id": 7, "audio": "a.wav", "speaker": 12}])
    (utt,) = read_manifest(tmp_path / "m.jsonl")
    assert (utt.id, utt.speaker, utt.offset, utt.duration) == ("7", "12", 0.0, None)
    assert utt.attributes == {} and utt.provenance == {}


@pytest.mark.parametrize(
    "row,field",
    [
        ({"audio": "a.wav"}, "id"),
        ({"id": "", "audio": "a.wav"}, "id"),
        ({"id": "a", "audio": 3}, "audio"),
        ({"id": "a", "audio": "a.wav", "offset": -1}, "offset"),
        ({"id": "a", "audio": "a.wav", "duration": 0}, "duration"),
        ({"id": "a", "audio": "a.wav", "duration": "2s"}, "duration"),
        ({"id": "a", "audio": "a.wav", "transcript": ["x"]}, "transcript"),
        ({"id": "a", "audio": "a.wav", "attributes": ["male"]}, "attributes"),
        ({"id": "a", "audio": "a.wav", "provenance": {"gender": 1}}, "provenance"),
        ({"id": "a", "audio": "a.wav", "attributes": {"gender": "m"}, "provenance": {"gender": "guess"}},
         "provenance.gender"),
    ],
)
def test_schema_errors_name_file_line_and_field(tmp_path, row, field):
    path = tmp_path / "bad.jsonl"
    write_rows(path, [{"id": "ok", "audio": "ok.wav"}, row])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert f"{path}:2: field '{field}'" in str(err.value)


def test_broken_json_and_duplicate_ids_name_the_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "audio": "a.wav"}\n\n{"id": "b", "audio"\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:3: not valid JSON"):
        read_manifest(path)
    write_rows(path, [{"id": "a", "audio": "a.wav"}, {"id": "a", "audio": "b.wav"}])
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: field 'id': duplicate id 'a'"):
        read_manifest(path)
    assert len(list(iter_manifest(path, check_unique_ids=False))) == 2


def test_set_attribute_keeps_corpus_and_user_labels():
    utt = Utterance(id="a", audio="a.wav", attributes={"gender": "female"},
                    provenance={"gender": PROVENANCE_CORPUS})
    assert not utt.set_attribute("gender", "male", annotator_provenance("v2g"))
    assert utt.attributes["gender"] == "female"
    assert utt.set_attribute("pitch", "high", annotator_provenance("pitch"))
    assert utt.set_attribute("gender", "male", "user", overwrite=True)
    assert utt.provenance == {"gender": "user", "pitch": "annotator:pitch"}


def test_iteration_is_lazy_and_memory_stays_flat(tmp_path):
    n = 6_000
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"utt-{i:07d}", "audio": f"wav/{i}.flac", "duration": 1.0,
                                "speaker": f"s{i % 50}", "transcript": "the same words again",
                                "attributes": {"gender": "male"},
                                "provenance": {"gender": "corpus"}}) + "\n")
    rows = iter_manifest(path, check_unique_ids=False)
    assert isinstance(rows, types.GeneratorType)
    tracemalloc.start()
    count = 0
    for _ in rows:
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == n
    # A list of these rows would take ~7 MB; reading lazily holds a few rows at a time.
    assert peak < 300_000, peak


def test_write_manifest_streams_a_generator(tmp_path):
    def gen():
        for i in range(3):
            yield Utterance(id=f"u{i}", audio=f"/abs/{i}.wav")

    assert write_manifest(tmp_path / "m.jsonl", gen()) == 3
    assert [u.id for u in read_manifest(tmp_path / "m.jsonl")] == ["u0", "u1", "u2"]
    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


@pytest.mark.parametrize("field,value", [("duration", "NaN"), ("duration", "Infinity"), ("offset", "NaN"),
                                         ("offset", "Infinity"), ("duration", "-Infinity")])
def test_non_finite_times_are_refused_with_file_line_and_field(tmp_path, field, value):
    path = tmp_path / "m.jsonl"
    # Python's json reads NaN and Infinity although JSON has no such values.
    path.write_text('{"id": "ok", "audio": "a.wav"}\n'
                    f'{{"id": "x", "audio": "a.wav", "{field}": {value}}}\n', encoding="utf-8")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(err.value) == f"{path}:2: field '{field}': expected a finite number, got {value.lower().replace('infinity', 'inf')}"


def test_write_manifest_never_writes_nan(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("old\n")
    rows = [Utterance(id="a", audio="a.wav", duration=1.0),
            Utterance(id="b", audio="b.wav", attributes={"pitch_hz": float("nan")})]
    with pytest.raises(ManifestError, match=r"m\.jsonl: row 'b': a value is NaN or Infinity"):
        write_manifest(path, rows)
    assert path.read_text() == "old\n"  # the old file is untouched and no temporary file is left
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]
