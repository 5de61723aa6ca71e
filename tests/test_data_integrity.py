"""Hostile or unlucky inputs to the data readers and writers (issue 14): non-finite numbers,
duplicate training ids, text that is not UTF-8. Each ends in one line naming the file, or a
counted skip, never a traceback or a silently wrong row."""

from __future__ import annotations

import json

import pytest

from speechllm.errors import SpeechLLMError
from speechllm.train.data import RowIndex, TrainingDataError
from speechllm.utils.jsonl import ResumableJsonlWriter, write_jsonl


def _row(rid: str, audio: str = "a.wav", **extra) -> dict:
    return {"id": rid, "audio": audio, "messages": [{"role": "user", "content": "<|AUDIO|>What?"}],
            "response": "A tone.", **extra}


def _write(path, rows, raw_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in raw_lines),
                    encoding="utf-8")
    return path


# --------------------------------------------------------------------------- item 10: NaN / Infinity


def test_jsonl_writers_refuse_nan_with_file_and_id(tmp_path):
    out = tmp_path / "out.jsonl"
    with ResumableJsonlWriter(out) as w:
        w.write({"id": "a", "x": 1.0})
        with pytest.raises(SpeechLLMError) as err:
            w.write({"id": "b", "x": float("nan")})
        assert str(err.value) == (f"{out}: row 'b': a value is NaN or Infinity, which JSON cannot hold; "
                                  "fix the value (or leave the field out) before writing")
        w.write({"id": "c", "x": 2.0})  # the writer goes on; nothing of row b was written
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "c"]
    with pytest.raises(SpeechLLMError, match=r"scores\.jsonl: row 'z': a value is NaN or Infinity"):
        write_jsonl(tmp_path / "scores.jsonl", [{"id": "z", "score": float("inf")}])
    assert not (tmp_path / "scores.jsonl").exists()


@pytest.mark.parametrize("field,value", [("duration", "NaN"), ("offset", "Infinity"), ("duration", "-Infinity")])
def test_training_rows_with_non_finite_times_name_file_line_and_field(tmp_path, field, value):
    path = _write(tmp_path / "targets.jsonl", [_row("a", duration=1.0)],
                  [json.dumps(_row("b"))[:-1] + f', "{field}": {value}}}'])
    with pytest.raises(TrainingDataError) as err:
        RowIndex([path])
    assert str(err.value) == (f"{path}:2: field '{field}': expected a finite number, got "
                              f"{float(value)!r}")


# --------------------------------------------------------------------------- item 7: duplicate ids


def test_duplicate_training_ids_within_and_across_files_name_both_lines(tmp_path):
    one = _write(tmp_path / "one.jsonl", [_row("a"), _row("b"), _row("a", audio="other.wav")])
    with pytest.raises(TrainingDataError) as err:
        RowIndex([one])
    assert str(err.value) == (
        f"{one}:3: duplicate id 'a' (first at {one}:1); training rows need unique ids (the feature "
        "cache and the skip report key rows by id): rename one or drop the repeated row")
    one = _write(tmp_path / "one.jsonl", [_row("a"), _row("b")])
    two = _write(tmp_path / "sub" / "two.jsonl", [_row("c"), _row("b")])
    with pytest.raises(TrainingDataError, match=rf"two\.jsonl:2: duplicate id 'b' \(first at {one}:2\)"):
        RowIndex([one, two])
    # Replay rows are text only: several replay files may share instruction ids on purpose.
    assert len(RowIndex([one, one], replay=True)) == 4


def _tone(path, seconds, freq):
    import numpy as np
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


def test_feature_cache_rebuilds_rows_whose_audio_changed_under_the_same_id(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    from train_fixtures import tiny_run_config, write_rows

    from speechllm.models import SpeechLLM
    from speechllm.train.data import audio_source_key
    from speechllm.train.feature_cache import FeatureCache, FeatureCacheError, build_cache

    first = write_rows(tmp_path / "a", 2)  # utt0 (0.5 s), utt1 (1.0 s)
    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [first], tmp_path / "run")
    model = SpeechLLM.from_config(cfg.model)
    cache_dir = tmp_path / "cache"
    assert build_cache(model, [str(first)], cache_dir)["cached"] == 2
    old_key = audio_source_key(RowIndex([first]).read(0))
    assert build_cache(model, [str(first)], cache_dir)["cached"] == 0  # nothing changed: nothing redone

    # The same id, the same path, other audio: rebuilt, not reused.
    _tone(tmp_path / "a" / "utt0.wav", 1.5, 700)
    rows = json.loads("[" + ",".join(first.read_text().splitlines()) + "]")
    rows[0]["duration"] = 1.5
    _write(first, rows)
    assert build_cache(model, [str(first)], cache_dir)["cached"] == 1
    cache = FeatureCache.open_for(cache_dir, model)
    assert cache.num_samples("utt0") == 24_000
    new_key = audio_source_key(RowIndex([first]).read(0))
    assert new_key != old_key
    assert cache.problem("utt0", new_key) is None
    # A row whose audio no longer matches its cached features is skipped and counted, never fed
    # the other audio's features.
    kind, message = cache.problem("utt0", old_key)
    assert kind == "stale_features" and "re-run `speechllm cache-features`" in message

    # Another file reusing id utt1 for other audio: rebuilt for that file's audio.
    other = _write(tmp_path / "b" / "rows.jsonl", [{**rows[1], "audio": "x.wav", "duration": 0.75}])
    _tone(tmp_path / "b" / "x.wav", 0.75, 300)
    assert build_cache(model, [str(other)], cache_dir)["cached"] == 1
    assert FeatureCache.open_for(cache_dir, model).num_samples("utt1") == 12_000

    # The training and validation files of one build may not give one id two audios.
    with pytest.raises(FeatureCacheError, match=r"rows\.jsonl:1: duplicate id 'utt1'"):
        build_cache(model, [str(first), str(other)], cache_dir)
    # The same file named twice (data.valid = a training file) is read once.
    assert build_cache(model, [str(first), str(first)], cache_dir)["cached"] == 1  # utt1 back to a/


# --------------------------------------------------------------------------- item 14: not UTF-8

LATIN1_ROW = '{"id": "b", "audio": "a.wav", "transcript": "caf\xe9"}'.encode("latin-1")


def _expected(path, line, position, byte="0xe9"):
    return (f"{path}:{line}: not UTF-8 text (byte {byte} at position {position}); re-encode the file as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}")


def test_latin1_manifest_names_the_file_and_line(tmp_path):
    from speechllm.data import read_manifest
    from speechllm.utils.jsonl import read_jsonl

    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "a", "audio": "a.wav"}\n' + LATIN1_ROW + b"\n")
    for read in (read_manifest, read_jsonl):
        with pytest.raises(SpeechLLMError) as err:
            read(path)
        assert str(err.value) == _expected(path, 2, LATIN1_ROW.index(b'\xe9') + 1)


def test_latin1_row_is_a_counted_schema_problem_in_validate(tmp_path):
    import numpy as np
    import soundfile as sf

    from speechllm.data.validate import validate_manifest

    sf.write(tmp_path / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "a", "audio": "a.wav"}\n' + LATIN1_ROW + b'\n{"id": "c", "audio": "a.wav"}\n')
    report = validate_manifest(path, progress=False)
    assert report.rows == 3 and dict(report.counts) == {"schema": 1}
    assert report.examples["schema"] == [_expected(path, 2, LATIN1_ROW.index(b'\xe9') + 1)]


def test_latin1_training_row_names_the_file_and_line(tmp_path):
    path = tmp_path / "targets.jsonl"
    row = json.dumps(_row("a", transcript="caf\u00e9"), ensure_ascii=False).encode("latin-1")
    path.write_bytes(json.dumps(_row("z")).encode() + b"\n" + row + b"\n")
    with pytest.raises(SpeechLLMError) as err:
        RowIndex([path])
    assert str(err.value) == _expected(path, 2, row.index(b"\xe9") + 1)


def test_latin1_kaldi_table_names_the_file_and_line(tmp_path):
    from speechllm.data.kaldi import read_kaldi_dir

    d = tmp_path / "data"
    d.mkdir()
    (d / "wav.scp").write_text("r1 /x.wav\n")
    (d / "text").write_bytes("r1 caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(SpeechLLMError) as err:
        read_kaldi_dir(d)
    assert str(err.value) == _expected(d / "text", 1, 7)


def test_latin1_label_files_name_the_file_and_line(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from data_prep.commonvoice import _read_tsv
    from speechllm.cli import main as cli_main

    root = tmp_path / "rec"
    root.mkdir()
    sf.write(root / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    labels = root / "labels.csv"
    labels.write_bytes("file,speaker\na.wav,Ren\xe9e\n".encode("latin-1"))
    assert cli_main(["prepare", "folder", str(root), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(_expected(labels, 2, 10)) and "Traceback" not in err and len(err.splitlines()) == 1
    tsv = tmp_path / "validated.tsv"
    tsv.write_bytes("path\tsentence\nx.mp3\tok\ny.mp3\tna\xefve\n".encode("latin-1"))
    with pytest.raises(SpeechLLMError) as exc:
        list(_read_tsv(tsv))
    assert str(exc.value) == _expected(tsv, 3, 9, byte="0xef")
