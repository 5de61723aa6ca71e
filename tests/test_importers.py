"""Corpus importers, each on a small tree in the corpus's published layout with generated audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

import data_prep  # noqa: F401  (registers the built-in importers, as `speechllm prepare` does)
from speechllm.cli import main as cli_main
from speechllm.data import read_manifest
from speechllm.data.importers import (
    CorpusError,
    get_importer,
    list_importers,
    normalise_attribute_name,
    normalise_gender,
    prepare_corpus,
)


def write_audio(path, seconds=0.3, sr=16_000, fmt=None, channels=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    wave = (0.1 * rng.standard_normal((int(sr * seconds), channels))).astype(np.float32)
    sf.write(path, wave if channels > 1 else wave[:, 0], sr, format=fmt)
    return path


def by_id(prepared):
    return {u.id: u for u in prepared.utterances()}


# --------------------------------------------------------------------------- LibriSpeech

SPEAKERS_TXT = """\
; Some comment lines
;ID  |SEX| SUBSET           |MINUTES| NAME
14   | F | train-clean-360  | 25.03 | Kristin LeMoine
19   | F | dev-clean        | 25.19 | Kara Shallenberg
60   | M | dev-clean        | 20.18 | |CBW|Simon
"""


def make_librispeech(root):
    ls = root / "LibriSpeech"
    (ls).mkdir(parents=True)
    (ls / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    for subset, spk, chapter, n in (("dev-clean", "19", "198", 2), ("test-clean", "60", "121082", 1)):
        d = ls / subset / spk / chapter
        lines = []
        for i in range(n):
            uid = f"{spk}-{chapter}-{i:04d}"
            write_audio(d / f"{uid}.flac", seconds=0.25 + 0.05 * i)
            lines.append(f"{uid} WORDS OF UTTERANCE {i}")
        (d / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech(tmp_path):
    root = make_librispeech(tmp_path / "corpus")
    prepared = prepare_corpus("librispeech", root, tmp_path / "out")
    assert sorted(prepared.splits) == ["dev-clean", "test-clean"]
    utts = by_id(prepared)
    u = utts["19-198-0001"]
    assert (u.speaker, u.transcript, u.split, u.corpus) == ("19", "WORDS OF UTTERANCE 1", "dev-clean", "librispeech")
    assert u.duration == pytest.approx(0.3, abs=1e-3)  # from the FLAC header
    assert u.attributes == {"gender": "female"} and u.provenance == {"gender": "corpus"}
    assert utts["60-121082-0000"].attributes["gender"] == "male"  # the name with '|' parsed
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r.id for r in rows] == ["19-198-0000", "19-198-0001", "60-121082-0000"]
    assert rows[0].audio_path.is_file()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["splits"]["dev-clean"]["utterances"] == 2
    assert summary["attributes"]["gender"] == {"female": 2, "male": 1}
    only = prepare_corpus("librispeech", root / "LibriSpeech", splits=["test-clean"])
    assert list(only.splits) == ["test-clean"]


# --------------------------------------------------------------------------- VCTK

SPEAKER_INFO_080 = """\
ID  AGE  GENDER  ACCENTS  REGION
225  23  F    English    Southern  England
236  23  F    English    Manchester
238  22  F    NorthernIrish  Belfast
"""
# The 0.92 header ends in a space, as published.
SPEAKER_INFO_092 = "ID  AGE  GENDER  ACCENTS  REGION COMMENTS \n" + """\
p225  23  F    English    Southern  England
p226  22  M    English    Surrey
p315  23  M    American   Connecticut  (mic2 files unavailable)
"""


def test_vctk_080_wav48(tmp_path):
    root = tmp_path / "VCTK-Corpus"
    root.mkdir()
    (root / "speaker-info.txt").write_text(SPEAKER_INFO_080)
    write_audio(root / "wav48" / "p225" / "p225_001.wav", sr=48_000)
    write_audio(root / "wav48" / "p238" / "p238_002.wav", sr=48_000)
    (root / "txt" / "p225").mkdir(parents=True)
    (root / "txt" / "p225" / "p225_001.txt").write_text("Please call Stella.\n")
    utts = by_id(prepare_corpus("vctk", root))
    assert sorted(utts) == ["p225_001", "p238_002"]
    u = utts["p225_001"]
    assert u.transcript == "Please call Stella." and u.speaker == "p225"
    assert u.attributes == {"age": 23, "gender": "female", "accent": "English", "region": "Southern England"}
    assert utts["p238_002"].attributes["accent"] == "Northern Irish"
    assert utts["p238_002"].transcript is None  # no txt file: kept, without a transcript


def test_vctk_092_flac_mics(tmp_path):
    root = tmp_path / "VCTK-Corpus-0.92"
    root.mkdir()
    (root / "speaker-info.txt").write_text(SPEAKER_INFO_092)
    for spk in ("p226", "p315"):
        for mic in ("mic1", "mic2"):
            write_audio(root / "wav48_silence_trimmed" / spk / f"{spk}_003_{mic}.flac", sr=48_000)
        (root / "txt" / spk).mkdir(parents=True)
        (root / "txt" / spk / f"{spk}_003.txt").write_text("Six spoons of fresh snow peas.")
    utts = by_id(prepare_corpus("vctk", root))
    assert sorted(utts) == ["p226_003", "p315_003"]
    assert utts["p226_003"].audio.endswith("p226_003_mic1.flac")
    assert utts["p315_003"].attributes["region"] == "Connecticut"  # comment dropped
    assert utts["p226_003"].attributes["gender"] == "male"
    both = by_id(prepare_corpus("vctk", root, mic="both"))
    assert sorted(both) == ["p226_003_mic1", "p226_003_mic2", "p315_003_mic1", "p315_003_mic2"]
    with pytest.raises(CorpusError, match="mic must be"):
        prepare_corpus("vctk", root, mic="mic3")


# --------------------------------------------------------------------------- CREMA-D


def test_cremad(tmp_path):
    root = tmp_path / "CREMA-D"
    for name in ("1001_DFA_ANG_XX", "1002_IEO_HAP_HI", "1001_TSI_NEU_XX", "badname"):
        write_audio(root / "AudioWAV" / f"{name}.wav")
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n")
    prepared = prepare_corpus("crema-d", root)  # '-' is ignored in names
    utts = by_id(prepared)
    assert sorted(utts) == ["1001_DFA_ANG_XX", "1001_TSI_NEU_XX", "1002_IEO_HAP_HI"]
    u = utts["1002_IEO_HAP_HI"]
    assert u.attributes == {"emotion": "happy", "emotion_intensity": "high", "age": 21, "gender": "female"}
    assert u.transcript == "It's eleven o'clock." and u.speaker == "1002"
    assert utts["1001_DFA_ANG_XX"].attributes["emotion"] == "angry"
    assert utts["1001_DFA_ANG_XX"].attributes["emotion_intensity"] == "unspecified"
    assert prepared.skipped_counts == {"unrecognised_name": 1}


# --------------------------------------------------------------------------- RAVDESS


def test_ravdess(tmp_path):
    root = tmp_path / "ravdess"
    write_audio(root / "Audio_Speech_Actors_01-24" / "Actor_01" / "03-01-05-02-01-01-01.wav", sr=48_000)
    write_audio(root / "Audio_Song_Actors_01-24" / "Actor_12" / "03-02-03-01-02-02-12.wav", sr=48_000)
    utts = by_id(prepare_corpus("ravdess", root))
    speech = utts["03-01-05-02-01-01-01"]
    assert speech.attributes == {"emotion": "angry", "emotion_intensity": "strong", "gender": "male",
                                 "vocal_channel": "speech"}
    assert speech.transcript == "Kids are talking by the door." and speech.speaker == "Actor_01"
    song = utts["03-02-03-01-02-02-12"]
    assert song.attributes["gender"] == "female" and song.attributes["vocal_channel"] == "song"
    assert song.transcript == "Dogs are sitting by the door."


# --------------------------------------------------------------------------- IEMOCAP

EMO_EVAL = """\
% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
C-E3:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M001\tfru\t[2.0000, 3.5000, 3.5000]
C-E2:\tFrustration;\t()

[14.8872 - 18.0175]\tSes01F_impro01_F002\txxx\t[2.5000, 2.5000, 2.5000]
"""
TRANSCRIPTION = """\
Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
Ses01F_impro01_M001 [010.0100-011.3925]: Do you have your forms?
Ses01F_impro01_F002 [014.8872-018.0175]: Yeah.
"""


def test_iemocap(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    dialog = root / "Session1" / "dialog"
    (dialog / "EmoEvaluation").mkdir(parents=True)
    (dialog / "transcriptions").mkdir(parents=True)
    (dialog / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(EMO_EVAL)
    (dialog / "transcriptions" / "Ses01F_impro01.txt").write_text(TRANSCRIPTION)
    for utt in ("Ses01F_impro01_F000", "Ses01F_impro01_M001"):  # F002's wav is missing
        write_audio(root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / f"{utt}.wav")
    prepared = prepare_corpus("iemocap", root)
    utts = by_id(prepared)
    assert sorted(utts) == ["Ses01F_impro01_F000", "Ses01F_impro01_M001"]
    f = utts["Ses01F_impro01_F000"]
    assert (f.speaker, f.transcript, f.split) == ("Ses01F", "Excuse me.", "Session1")
    assert f.attributes == {"gender": "female", "valence": 2.5, "arousal": 2.5, "dominance": 2.5,
                            "emotion": "neutral"}
    m = utts["Ses01F_impro01_M001"]
    assert m.speaker == "Ses01M" and m.attributes["emotion"] == "frustrated"
    assert m.attributes["gender"] == "male"
    # A row whose audio is missing is counted, never dropped silently.
    assert prepared.skipped_counts == {"missing": 1}
    assert prepared.skipped["missing"][0].endswith("Ses01F_impro01_F002.wav")


# --------------------------------------------------------------------------- Common Voice

CV_HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\n"


def test_commonvoice_mp3(tmp_path):
    root = tmp_path / "cv-corpus-17.0-2024-03-15" / "en"
    clips = root / "clips"
    write_audio(clips / "common_voice_en_1.mp3", seconds=1.0, sr=48_000, fmt="MP3")
    write_audio(clips / "common_voice_en_2.mp3", seconds=1.0, sr=48_000, fmt="MP3")
    (root / "train.tsv").write_text(
        CV_HEADER
        + "abc123\tcommon_voice_en_1.mp3\tsid1\tHello world.\t\t2\t0\ttwenties\tmale_masculine\tUnited States English\t\ten\t\n")
    (root / "test.tsv").write_text(
        CV_HEADER
        + "def456\tcommon_voice_en_2.mp3\tsid2\t\"Quoted\" words.\t\t2\t0\t\t\t\t\ten\t\n"
        + "def456\tcommon_voice_en_3.mp3\tsid3\tGone.\t\t2\t0\t\t\t\t\ten\t\n")
    (root / "validated.tsv").write_text(CV_HEADER)
    (root / "clip_durations.tsv").write_text("clip\tduration[ms]\ncommon_voice_en_1.mp3\t1000\n")
    prepared = prepare_corpus("commonvoice", tmp_path / "cv-corpus-17.0-2024-03-15")  # one locale inside
    utts = by_id(prepared)
    assert sorted(prepared.splits) == ["test", "train"]
    u1 = utts["common_voice_en_1"]
    assert u1.duration == 1.0  # from clip_durations.tsv
    assert u1.attributes == {"age": "twenties", "gender": "male", "accent": "United States English",
                             "language": "en"}
    assert u1.speaker == "abc123" and u1.transcript == "Hello world."
    u2 = utts["common_voice_en_2"]
    assert u2.transcript == '"Quoted" words.'
    assert u2.duration == pytest.approx(1.0, abs=0.08)  # from the mp3 header
    assert u2.attributes == {"language": "en"}
    assert prepared.skipped_counts == {"missing": 1}


def test_commonvoice_old_accent_codes(tmp_path):
    root = tmp_path / "en"
    write_audio(root / "clips" / "a.mp3", seconds=0.5, sr=48_000, fmt="MP3")
    (root / "validated.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\nx\ta.mp3\tHi.\t2\t0\tthirties\tfemale\tscotland\n")
    (u,) = prepare_corpus("commonvoice", root).utterances()
    assert u.split == "validated"
    assert u.attributes == {"age": "thirties", "gender": "female", "accent": "Scottish English"}


# --------------------------------------------------------------------------- AccentDB, Kaldi, folder


def test_accentdb(tmp_path):
    root = tmp_path / "accentdb_extended"
    write_audio(root / "data" / "american" / "speaker_01" / "american_s01_001.wav")
    write_audio(root / "data" / "bangla" / "speaker_02" / "bangla_s02_010.wav")
    utts = by_id(prepare_corpus("accentdb", root))
    assert utts["american_s01_001"].attributes == {"accent": "American"}
    assert utts["bangla_s02_010"].speaker == "bangla_speaker_02"


def test_kaldi_importer(tmp_path):
    recipe = tmp_path / "recipe"
    write_audio(recipe / "wav" / "a.wav", seconds=2.0)
    d = recipe / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("rec wav/a.wav\n")  # relative to the recipe folder, as in Kaldi
    (d / "segments").write_text("spk1-u1 rec 0.0 0.8\nspk1-u2 rec 1.0 -1\n")
    (d / "text").write_text("spk1-u1 first part\nspk1-u2 second part\n")
    (d / "utt2spk").write_text("spk1-u1 spk1\nspk1-u2 spk1\n")
    (d / "spk2gender").write_text("spk1 M\n")
    utts = by_id(prepare_corpus("kaldi", d, tmp_path / "out"))
    assert utts["spk1-u1"].duration == pytest.approx(0.8)
    assert utts["spk1-u2"].offset == 1.0 and utts["spk1-u2"].duration == pytest.approx(1.0)  # header
    assert utts["spk1-u1"].attributes == {"gender": "male"} and utts["spk1-u1"].split == "train"
    (d / "wav.scp").write_text("rec sox wav/a.wav -t wav - |\n")
    with pytest.raises(Exception, match="--allow-pipes"):
        prepare_corpus("kaldi", d)


def test_folder_with_labels_csv(tmp_path):
    root = tmp_path / "my_recordings"
    write_audio(root / "clips" / "one.wav")
    write_audio(root / "clips" / "two.flac")
    (root / "labels.csv").write_text(
        "file,Speaker,Text,Sex,Age,Emotion Level,mood\n"
        "clips/one.wav,ann,hello there,F,34,HI,calm\n"
        "clips/two.flac,bob,,M,,-,n/a\n")
    utts = by_id(prepare_corpus("folder", root))
    one = utts["clips_one"]
    assert (one.speaker, one.transcript, one.corpus) == ("ann", "hello there", "my_recordings")
    assert one.attributes == {"gender": "female", "age": 34, "emotion_intensity": "HI", "mood": "calm"}
    assert one.provenance == dict.fromkeys(one.attributes, "corpus")
    assert utts["clips_two"].attributes == {"gender": "male"} and utts["clips_two"].transcript is None


def test_folder_without_labels_and_tsv_labels(tmp_path):
    root = tmp_path / "plain"
    write_audio(root / "a.wav")
    write_audio(root / "sub" / "b.ogg", fmt="OGG")
    assert sorted(by_id(prepare_corpus("folder", root))) == ["a", "sub_b"]
    tsv = tmp_path / "elsewhere.tsv"
    tsv.write_text("id\tpath\tgender\nX1\ta.wav\tfemale\n")
    (u,) = prepare_corpus("folder", root, labels=tsv).utterances()
    assert (u.id, u.attributes) == ("X1", {"gender": "female"})
    bad = tmp_path / "bad.csv"
    bad.write_text("name,gender\na.wav,f\n")
    with pytest.raises(CorpusError, match=r"bad\.csv:1: no audio column"):
        prepare_corpus("folder", root, labels=bad)


# --------------------------------------------------------------------------- registry and CLI


def test_registry_lists_every_corpus_and_mirrors_the_python_api():
    names = [i.name for i in list_importers()]
    assert names == sorted(["librispeech", "vctk", "cremad", "ravdess", "iemocap", "commonvoice",
                            "accentdb", "kaldi", "folder"])
    import data_prep.librispeech

    assert get_importer("librispeech").prepare is data_prep.librispeech.prepare_librispeech
    assert get_importer("Common-Voice").name == "commonvoice"
    with pytest.raises(CorpusError, match="unknown corpus 'timit'; importers: accentdb"):
        get_importer("timit")
    with pytest.raises(CorpusError, match="unknown option"):
        prepare_corpus("ravdess", "/x", mic="mic1")


@pytest.mark.parametrize("name", ["librispeech", "vctk", "cremad", "ravdess", "iemocap", "commonvoice",
                                  "accentdb", "kaldi", "folder"])
def test_missing_corpus_dir_names_the_path(tmp_path, name):
    with pytest.raises(CorpusError, match=f"corpus folder {tmp_path / 'absent'} does not exist"):
        prepare_corpus(name, tmp_path / "absent")


def test_label_normalisation():
    assert [normalise_gender(v) for v in ("M", "f", "Male", "FEMALE", "female_feminine", "other", " ", None)] == [
        "male", "female", "male", "female", "female", "other", None, None]
    assert [normalise_attribute_name(n) for n in ("Sex", "Accents", "Emotion Level", "locale", "pitch")] == [
        "gender", "accent", "emotion_intensity", "language", "pitch"]


def test_cli_prepare_and_list(tmp_path, capsys):
    root = make_librispeech(tmp_path / "corpus")
    assert cli_main(["prepare", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "librispeech" in listing and "openslr.org/12" in listing and "--allow-pipes" in listing
    out = tmp_path / "out"
    assert cli_main(["prepare", "librispeech", str(root), str(out), "--per-split"]) == 0
    printed = capsys.readouterr().out
    assert "dev-clean" in printed and "2 utterances" in printed
    assert len(read_manifest(out / "manifest.dev-clean.jsonl")) == 2
    assert len(read_manifest(out / "manifest.jsonl")) == 3
    assert cli_main(["prepare", "librispeech", str(tmp_path / "nope"), str(out)]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert cli_main(["prepare", "librispeech", str(root), str(out), "--mic", "mic2"]) == 2
    assert "--mic does not apply to librispeech" in capsys.readouterr().err


def test_folder_csv_nan_duration_is_read_from_the_header_and_inf_is_refused(tmp_path):
    root = tmp_path / "rec"
    write_audio(root / "a.wav", seconds=0.5)
    (root / "labels.csv").write_text("file,duration,offset\na.wav,nan,\n")
    prepared = prepare_corpus("folder", root, tmp_path / "out")
    (u,) = prepared.utterances()
    assert u.duration == pytest.approx(0.5)  # a spreadsheet's "nan" means "no value", as for labels
    assert "NaN" not in (tmp_path / "out" / "manifest.jsonl").read_text()
    (root / "labels.csv").write_text("file,duration\na.wav,inf\n")
    with pytest.raises(CorpusError) as err:
        prepare_corpus("folder", root)
    assert str(err.value) == f"{root / 'labels.csv'}:2: column 'duration': 'inf' is not a finite number"


def test_folder_import_skips_and_counts_a_truncated_wav(tmp_path):
    root = tmp_path / "rec"
    write_audio(root / "good.wav", seconds=0.5)
    data = write_audio(root / "cut.wav", seconds=1.0).read_bytes()
    (root / "cut.wav").write_bytes(data[:len(data) // 2])  # an interrupted copy: header says 1 s
    prepared = prepare_corpus("folder", root)
    assert [u.id for u in prepared.utterances()] == ["good"]
    assert prepared.summary()["skipped"] == {"truncated": {"count": 1, "examples": [str(root / "cut.wav")]}}
