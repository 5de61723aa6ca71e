"""``speechllm validate``: every problem kind counted, examples listed, exit code."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from speechllm.cli import main as cli_main
from speechllm.data.validate import PROBLEM_KINDS, validate_manifest


def write(path, wave, sr=16_000, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(wave, dtype=np.float32), sr, subtype=subtype)
    return path


def noise(seconds, sr=16_000):
    return 0.1 * np.random.default_rng(0).standard_normal(int(seconds * sr))


def build_manifest(tmp_path):
    a = tmp_path / "audio"
    write(a / "good1.wav", noise(0.5))
    write(a / "good2.flac", noise(1.0, 44_100), sr=44_100)
    write(a / "long.wav", noise(3.0))
    write(a / "zero.wav", np.zeros(8000))
    nan = noise(0.5)
    nan[10] = np.nan
    write(a / "nan.wav", nan, subtype="FLOAT")
    write(a / "short.wav", noise(0.05))
    (a / "empty.wav").write_bytes(b"")
    (a / "junk.wav").write_bytes(b"not audio" * 50)
    rows = [
        {"id": "good1", "audio": "audio/good1.wav"},
        {"id": "good2", "audio": "audio/good2.flac", "offset": 0.25, "duration": 0.5},
        {"id": "long", "audio": "audio/long.wav"},
        {"id": "zero", "audio": "audio/zero.wav"},
        {"id": "nan", "audio": "audio/nan.wav"},
        {"id": "short", "audio": "audio/short.wav"},
        {"id": "empty", "audio": "audio/empty.wav"},
        {"id": "junk", "audio": "audio/junk.wav"},
        {"id": "gone1", "audio": "audio/gone1.wav"},
        {"id": "gone2", "audio": "audio/gone2.wav"},
        {"id": "past_end", "audio": "audio/good1.wav", "offset": 0.2, "duration": 1.0},
        {"id": "good1", "audio": "audio/good1.wav"},
        {"id": "noaudio", "audio": None},
        {"id": "bad_dur", "audio": "audio/good1.wav", "duration": -3},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{not json")
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_problem_is_counted_with_examples(tmp_path):
    path = build_manifest(tmp_path)
    report = validate_manifest(path, max_seconds=2.0, progress=False)
    assert report.rows == 15
    assert dict(report.counts) == {
        "schema": 2, "duplicate_id": 1, "no_audio": 1, "missing": 2, "unreadable": 1, "empty": 1,
        "nan_or_inf": 1, "all_zero": 1, "too_short": 1, "too_long": 1, "segment_out_of_range": 1,
    }
    assert report.examples["missing"] == ["gone1", "gone2"]
    assert report.examples["schema"][0] == f"{path}:4 (not valid JSON: Expecting property name enclosed in double quotes)"
    assert f"{path}:15: field 'duration'" in report.examples["schema"][1]
    assert report.examples["duplicate_id"] == [f"good1 ({path}:13)"]
    assert not report.ok and report.bad_rows == 13
    # Only the two good rows' audio counts towards the checked hours.
    assert report.total_seconds == 1.0
    text = report.format()
    assert "15 rows" in text and "nan_or_inf" in text
    assert text.index("schema") < text.index("missing") < text.index("segment_out_of_range")


def test_without_audio_checks_only_rows_are_checked(tmp_path):
    report = validate_manifest(build_manifest(tmp_path), check_audio=False, progress=False)
    assert set(report.counts) == {"schema", "duplicate_id", "no_audio"}


def test_max_examples_and_problem_kinds(tmp_path):
    report = validate_manifest(build_manifest(tmp_path), max_examples=1, progress=False)
    assert report.counts["missing"] == 2 and report.examples["missing"] == ["gone1"]
    assert set(report.counts) <= set(PROBLEM_KINDS)


def test_clean_manifest_passes(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav"}) + "\n")
    report = validate_manifest(tmp_path / "m.jsonl", progress=False)
    assert report.ok and report.rows == 1 and "no problems found" in report.format()


def test_cli_exit_codes_and_json(tmp_path, capsys):
    path = build_manifest(tmp_path)
    assert cli_main(["validate", str(path), "--max-seconds", "2"]) == 1
    out = capsys.readouterr().out
    assert "too_long" in out and "gone1, gone2" in out
    assert cli_main(["validate", str(path), "--no-check-audio", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["problems"]["duplicate_id"]["count"] == 1 and "missing" not in data["problems"]
    write(tmp_path / "ok" / "a.wav", noise(0.5))
    (tmp_path / "ok" / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav"}) + "\n")
    assert cli_main(["validate", str(tmp_path / "ok" / "m.jsonl")]) == 0
    assert cli_main(["validate", str(tmp_path / "absent.jsonl")]) == 2
    assert "no such manifest" in capsys.readouterr().err


def test_non_finite_times_are_schema_problems_not_a_crash(tmp_path):
    write(tmp_path / "a.wav", noise(0.5))
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "ok", "audio": "a.wav"}\n{"id": "nan", "audio": "a.wav", "duration": NaN}\n'
                    '{"id": "inf", "audio": "a.wav", "offset": Infinity}\n', encoding="utf-8")
    report = validate_manifest(path, progress=False)
    assert dict(report.counts) == {"schema": 2}
    assert report.examples["schema"] == [
        f"{path}:2: field 'duration': expected a finite number, got nan",
        f"{path}:3: field 'offset': expected a finite number, got inf",
    ]


def test_truncated_files_are_counted_as_truncated(tmp_path):
    a = tmp_path / "audio"
    full_wav = write(a / "full.wav", noise(2.0))
    sf.write(a / "full.mp3", noise(2.0).astype(np.float32), 16_000, format="MP3")
    for name in ("full.wav", "full.mp3"):
        data = (a / name).read_bytes()
        (a / name.replace("full", "cut")).write_bytes(data[:len(data) // 2])
    rows = [
        {"id": "ok", "audio": "audio/full.wav", "duration": 2.0},
        # The manifest's duration agrees with the header: the file, not the row, is wrong.
        {"id": "cut_wav", "audio": "audio/cut.wav", "duration": 2.0},
        {"id": "cut_wav_whole", "audio": "audio/cut.wav"},
        {"id": "cut_mp3", "audio": "audio/cut.mp3"},
        # A segment inside the part of the file that is there is usable.
        {"id": "cut_wav_head", "audio": "audio/cut.wav", "offset": 0.1, "duration": 0.5},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate_manifest(path, progress=False)
    assert dict(report.counts) == {"truncated": 3}
    assert report.examples["truncated"] == ["cut_wav", "cut_wav_whole", "cut_mp3"]
    assert "truncated" in PROBLEM_KINDS and full_wav.is_file()
