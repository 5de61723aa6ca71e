"""Kaldi data dirs: reading, writing, round trips and the pipe guard."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from speechllm.audio import load_audio
from speechllm.data import Utterance
from speechllm.data.kaldi import KaldiDirError, pipe_audio_name, read_kaldi_dir, write_kaldi_dir


def make_wav(path, seconds=1.0, sr=16_000, freq=440.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def write_files(d, files):
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_read_plain_dir_with_all_tables(tmp_path):
    a = make_wav(tmp_path / "audio" / "spkA-1.wav", 1.0)
    b = make_wav(tmp_path / "audio" / "spkB-1.wav", 2.0)
    d = tmp_path / "data" / "train"
    write_files(d, {
        # Relative path: taken from the recipe root, as Kaldi does.
        "wav.scp": f"spkB-1 {b}\nspkA-1 audio/spkA-1.wav\n",
        "text": "spkA-1 HELLO WORLD\nspkB-1\n",
        "utt2spk": "spkA-1 spkA\nspkB-1 spkB\n",
        "spk2gender": "spkA f\nspkB m\n",
        "utt2dur": "spkA-1 1.0\nspkB-1 2.0\n",
        "utt2lang": "spkA-1 en\nspkB-1 de\n",
    })
    utts = read_kaldi_dir(d, root=tmp_path, corpus="mine", split="train")
    assert [u.id for u in utts] == ["spkA-1", "spkB-1"]
    ua, ub = utts
    assert ua.audio_path == a and ub.audio_path == b
    assert (ua.speaker, ua.transcript, ua.duration) == ("spkA", "HELLO WORLD", 1.0)
    assert ub.transcript == ""  # a key alone on its line is an empty transcript
    assert ua.attributes == {"gender": "female", "lang": "en"}
    assert ub.attributes == {"gender": "male", "lang": "de"}
    assert ua.provenance == {"gender": "corpus", "lang": "corpus"}
    assert (ua.corpus, ua.split) == ("mine", "train")


def test_segments_give_offsets_and_durations(tmp_path):
    rec = make_wav(tmp_path / "long.wav", 5.0)
    d = tmp_path / "data"
    write_files(d, {
        "wav.scp": f"rec1 {rec}\n",
        "segments": "u2 rec1 2.5 4.0\nu1 rec1 0.0 1.5\nu3 rec1 4.0 -1\n",
        "utt2spk": "u1 s\nu2 s\nu3 s\n",
    })
    utts = read_kaldi_dir(d)
    assert [(u.id, u.offset, u.duration) for u in utts] == [
        ("u1", 0.0, 1.5), ("u2", 2.5, 1.5), ("u3", 4.0, None)]
    assert len(load_audio(utts[1].audio_path, offset=utts[1].offset, duration=utts[1].duration)) == 24_000


def test_round_trip_plain_and_segmented(tmp_path):
    whole = make_wav(tmp_path / "w" / "x.wav", 1.0)
    long = make_wav(tmp_path / "w" / "long.flac", 4.0)
    utts = [
        Utterance(id="s1-x", audio=str(whole), duration=1.0, speaker="s1", transcript="one\ntwo",
                  attributes={"gender": "female", "emotion": "happy"},
                  provenance={"gender": "corpus", "emotion": "corpus"}),
        Utterance(id="s2-a", audio=str(long), offset=0.5, duration=1.0, speaker="s2",
                  transcript="first", attributes={"gender": "male"}, provenance={"gender": "corpus"}),
        Utterance(id="s2-b", audio=str(long), offset=2.0, duration=1.25, speaker="s2",
                  transcript="second", attributes={"gender": "male"}, provenance={"gender": "corpus"}),
    ]
    d = write_kaldi_dir(utts, tmp_path / "kaldi")
    assert (d / "segments").read_text().splitlines() == [
        "s1-x x 0.000 1.000", "s2-a long 0.500 1.500", "s2-b long 2.000 3.250"]
    assert (d / "spk2utt").read_text() == "s1 s1-x\ns2 s2-a s2-b\n"
    assert (d / "spk2gender").read_text() == "s1 f\ns2 m\n"
    assert (d / "text").read_text().splitlines()[0] == "s1-x one two"
    back = read_kaldi_dir(d)
    assert [(u.id, u.audio_path, u.offset, u.duration, u.speaker) for u in back] == [
        (u.id, u.audio_path, u.offset, u.duration, u.speaker) for u in utts]
    assert back[0].transcript == "one two"
    assert back[0].attributes == {"gender": "female", "emotion": "happy"}
    assert back[2].attributes == {"gender": "male"}


def test_whole_files_need_no_segments_and_speakerless_rows_are_their_own_speaker(tmp_path):
    a = make_wav(tmp_path / "a.wav", 1.0)
    d = write_kaldi_dir([Utterance(id="a", audio=str(a), duration=1.0)], tmp_path / "k")
    assert not (d / "segments").exists()
    assert (d / "wav.scp").read_text() == f"a {a.resolve()}\n"
    assert (d / "utt2spk").read_text() == "a a\n"
    (back,) = read_kaldi_dir(d)
    assert (back.id, back.duration, back.offset, back.speaker) == ("a", 1.0, 0.0, "a")


def test_pipes_are_refused_by_default_with_file_and_line(tmp_path):
    d = tmp_path / "data"
    write_files(d, {"wav.scp": "r1 /x.wav\nr2 sox /x.flac -t wav - |\n"})
    with pytest.raises(KaldiDirError) as err:
        read_kaldi_dir(d)
    msg = str(err.value)
    assert f"{d / 'wav.scp'}:2" in msg and "--allow-pipes" in msg


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_allowed_pipes_are_decoded_into_files(tmp_path):
    src = make_wav(tmp_path / "src.wav", 1.0, sr=8_000, freq=300)
    d = tmp_path / "data"
    write_files(d, {"wav.scp": "r1 sox src.wav -t wav - |\n", "text": "r1 piped\n"})
    (utt,) = read_kaldi_dir(d, allow_pipes=True, root=tmp_path, pipe_audio_dir=tmp_path / "decoded")
    assert utt.audio_path.parent == tmp_path / "decoded" and utt.audio_path.name.startswith("r1-")
    assert np.allclose(sf.read(utt.audio_path)[0], sf.read(src)[0], atol=1e-4)
    assert utt.transcript == "piped"


def test_failing_pipe_names_file_and_line(tmp_path):
    d = tmp_path / "data"
    write_files(d, {"wav.scp": "r1 cat /definitely/not/here.wav |\n"})
    with pytest.raises(KaldiDirError, match=r"wav\.scp:1: command exited with status 1"):
        read_kaldi_dir(d, allow_pipes=True, pipe_audio_dir=tmp_path / "p")


@pytest.mark.parametrize(
    "files,pattern",
    [
        ({}, r"wav\.scp: missing"),
        ({"wav.scp": "r1\n"}, r"wav\.scp:1: expected"),
        ({"wav.scp": "r1 /a.wav\nr1 /b.wav\n"}, r"wav\.scp:2: recording id 'r1' appears twice"),
        ({"wav.scp": "r1 /a.ark:12\n"}, r"wav\.scp:1: .*archive"),
        ({"wav.scp": "r1 /a.wav\n", "segments": "u1 r9 0 1\n"}, r"segments:1: recording 'r9'"),
        ({"wav.scp": "r1 /a.wav\n", "segments": "u1 r1 2 1\n"}, r"segments:1: end 1.0 is not after"),
        ({"wav.scp": "r1 /a.wav\n", "segments": "u1 r1 x 1\n"}, r"segments:1: start 'x'"),
        ({"wav.scp": "r1 /a.wav\n", "utt2dur": "r1 1.0\nr2 long\n"}, r"utt2dur:2: duration 'long'"),
        ({"wav.scp": "r1 /a.wav\n", "utt2dur": "r1 nan\n"}, r"utt2dur:1: duration 'nan' is not a finite number"),
        ({"wav.scp": "r1 /a.wav\n", "segments": "u1 r1 0 inf\n"}, r"segments:1: end 'inf' is not a finite number"),
    ],
)
def test_malformed_dirs_name_file_and_line(tmp_path, files, pattern):
    d = tmp_path / "data"
    write_files(d, files)
    with pytest.raises(KaldiDirError, match=pattern):
        read_kaldi_dir(d)


def test_missing_dir(tmp_path):
    with pytest.raises(KaldiDirError, match="no such Kaldi data dir"):
        read_kaldi_dir(tmp_path / "nope")


# A pipe command that works without sox: the data dir's own WAV copied to stdout.
def _cat_pipe(src):
    return f"cat {src} |"


def test_pipe_recording_ids_cannot_escape_the_pipe_audio_folder(tmp_path):
    src = make_wav(tmp_path / "src.wav", 0.5)
    d = tmp_path / "data"
    pipe_dir = tmp_path / "out" / "pipe_audio"
    write_files(d, {"wav.scp": f"../../escaped {_cat_pipe(src)}\n/abs/name {_cat_pipe(src)}\n"})
    utts = read_kaldi_dir(d, allow_pipes=True, root=tmp_path, pipe_audio_dir=pipe_dir)
    assert sorted(u.id for u in utts) == ["../../escaped", "/abs/name"]
    for u in utts:
        # Every decoded file lies directly in pipe_audio/, whatever the id says.
        assert u.audio_path.parent == pipe_dir
        assert np.allclose(sf.read(u.audio_path)[0], sf.read(src)[0], atol=1e-4)
    assert not (tmp_path / "escaped.flac").exists() and not (tmp_path / "out" / "escaped.flac").exists()
    assert sorted(p.parent for p in tmp_path.rglob("*.flac")) == [pipe_dir, pipe_dir]
    name = pipe_audio_name("cat a.wav", "../../x", tmp_path)
    assert "/" not in name and not name.startswith(".") and name.endswith(".flac")
    # Ids that sanitise alike still get their own files.
    assert pipe_audio_name("c", "a/b", tmp_path) != pipe_audio_name("c", "a_b", tmp_path)


def test_a_changed_pipe_command_decodes_again(tmp_path):
    low = make_wav(tmp_path / "low.wav", 0.5, freq=200)
    high = make_wav(tmp_path / "high.wav", 0.75, freq=2000)
    d = tmp_path / "data"
    pipe_dir = tmp_path / "pipe_audio"
    write_files(d, {"wav.scp": f"r1 {_cat_pipe(low)}\n"})
    (first,) = read_kaldi_dir(d, allow_pipes=True, root=tmp_path, pipe_audio_dir=pipe_dir)
    write_files(d, {"wav.scp": f"r1 {_cat_pipe(high)}\n"})
    (second,) = read_kaldi_dir(d, allow_pipes=True, root=tmp_path, pipe_audio_dir=pipe_dir)
    assert first.audio_path != second.audio_path
    assert len(sf.read(second.audio_path)[0]) == 12_000  # high.wav, not the stale low.wav
    assert np.allclose(sf.read(second.audio_path)[0], sf.read(high)[0], atol=1e-4)
    # The same command again reuses its decoded file (the command is not run twice).
    mtime = second.audio_path.stat().st_mtime_ns
    (again,) = read_kaldi_dir(d, allow_pipes=True, root=tmp_path, pipe_audio_dir=pipe_dir)
    assert again.audio_path == second.audio_path and again.audio_path.stat().st_mtime_ns == mtime
