"""``speechllm init-model`` and ``speechllm-infer`` on tiny models: single requests, text only,
streaming, the resumable manifest mode, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from speechllm.cli import infer_main, main

SR = 16_000


def write_tone(path, seconds=1.0, sr=SR, channels=1, fmt=None):
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    data = np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave
    sf.write(str(path), data, sr, format=fmt)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_whisper_dir, tiny_llm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer") / "ckpt"
    rc = main(["init-model", "--encoder", str(tiny_whisper_dir), "--llm", str(tiny_llm_dir),
               "--adapter", "qformer", str(out), "dtype=fp32", "max_audio_seconds=60"])
    assert rc == 0
    return out


def test_init_model_writes_an_untrained_checkpoint(checkpoint, tiny_llm_dir, capsys):
    meta = json.loads((checkpoint / "speechllm_config.json").read_text())
    assert meta["model"]["adapter"] == "qformer" and meta["model"]["max_audio_seconds"] == 60
    assert meta["llm"]["ref"] == str(tiny_llm_dir) and len(meta["llm"]["sha256"]) == 64
    assert (checkpoint / "adapter.safetensors").stat().st_size > 0
    rc = main(["init-model", "--encoder", "x", "--llm", "y", str(checkpoint)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err


def test_single_request_with_stereo_44k_audio_and_timings(checkpoint, tmp_path, capsys):
    audio = write_tone(tmp_path / "a.flac", 1.5, sr=44_100, channels=2)
    rc = infer_main(["--model", str(checkpoint), "--audio", str(audio), "--prompt", "What can you hear?",
                     "--transcript", "a low tone", "--max-new-tokens", "4", "--timings"])
    captured = capsys.readouterr()
    assert rc == 0
    assert captured.out.endswith("\n")
    assert "timings: load_s=" in captured.err and "rtf=" in captured.err and "encoder_s=" in captured.err


def test_text_only_and_streaming(checkpoint, capsys):
    rc = main(["infer", "--model", str(checkpoint), "--prompt", "Hello", "--max-new-tokens", "3"])
    plain = capsys.readouterr().out
    assert rc == 0
    rc = main(["infer", "--model", str(checkpoint), "--prompt", "Hello", "--max-new-tokens", "3", "--stream"])
    streamed = capsys.readouterr().out
    assert rc == 0 and streamed.strip() == plain.strip()  # greedy: same reply, printed as it came


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "no such file"),
        ("empty", "empty"),
        ("nan", "NaN"),
        ("locators", "2 audio locator"),
        ("too_long", "max_audio_seconds=60"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path, capsys, case, expected):
    prompt = "Describe."
    audio = tmp_path / "a.wav"
    if case == "missing":
        audio = tmp_path / "nope.wav"
    elif case == "empty":
        audio.write_bytes(b"")
    elif case == "nan":
        sf.write(str(audio), np.full(SR, np.nan, dtype=np.float32), SR, subtype="FLOAT")
    elif case == "locators":
        write_tone(audio)
        prompt = "<|AUDIO|> and <|AUDIO|>?"
    elif case == "too_long":
        write_tone(audio, seconds=61, sr=8000)
    rc = main(["infer", "--model", str(checkpoint), "--audio", str(audio), "--prompt", prompt])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and expected in err
    if case in ("missing", "empty", "nan"):
        assert str(audio) in err


def test_incomplete_checkpoint_names_the_missing_file(checkpoint, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "adapter.safetensors").unlink()
    rc = main(["infer", "--model", str(broken), "--prompt", "Hi"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(broken / "adapter.safetensors") in err and "missing" in err


def test_manifest_mode_is_resumable_and_records_bad_rows(checkpoint, tmp_path, capsys):
    write_tone(tmp_path / "a.wav", 1.0)
    write_tone(tmp_path / "b.ogg", 2.0, sr=22_050, fmt="OGG")
    rows = [
        {"id": "u1", "audio": "a.wav", "prompt": "What is it?", "transcript": "a tone"},
        {"id": "u2", "prompt": "Say hi."},
        {"id": "u3", "audio": "missing.wav", "prompt": "?"},
        {"id": "u4", "audio": ["a.wav", "b.ogg"], "messages": [
            {"role": "user", "content": "Compare <|AUDIO|> with <|AUDIO|>."}], "transcript": ["x", "y"]},
    ]
    manifest = tmp_path / "in.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ["infer", "--model", str(checkpoint), "--manifest", str(manifest), "--output", str(out),
            "--max-new-tokens", "3"]
    assert main(args) == 0
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(got) == ["u1", "u2", "u3", "u4"]
    assert isinstance(got["u1"]["response"], str) and got["u1"]["transcripts"] == ["a tone"]
    assert got["u2"]["transcripts"] == []
    assert got["u3"]["error"] == "missing" and "missing.wav" in got["u3"]["error_message"]
    assert got["u4"]["transcripts"] == ["x", "y"]
    assert "3 written" in capsys.readouterr().err
    # a killed run leaves a torn line: the rerun repairs it and does only what is missing
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:10])
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 already done" in err
    assert sorted(json.loads(x)["id"] for x in out.read_text().splitlines()) == ["u1", "u2", "u3", "u4"]


def test_manifest_rows_without_prompt_take_the_cli_prompt(checkpoint, tmp_path):
    write_tone(tmp_path / "a.wav", 1.0)
    manifest = tmp_path / "data.jsonl"  # a plain data manifest: no prompt, no messages
    manifest.write_text(json.dumps({"id": "d1", "audio": "a.wav", "transcript": "a tone"}) + "\n"
                        + json.dumps({"id": "d2", "audio": "a.wav", "prompt": "Own prompt?", "transcript": "t"}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["infer", "--model", str(checkpoint), "--manifest", str(manifest), "--output", str(out),
                 "--prompt", "Is the speaker male or female?", "--max-new-tokens", "2"]) == 0
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert got["d1"]["prompt"] == "Is the speaker male or female?"
    limited = tmp_path / "limited.jsonl"
    assert main(["infer", "--model", str(checkpoint), "--manifest", str(manifest), "--output", str(limited),
                 "--prompt", "Hi", "--max-new-tokens", "1", "--limit", "1"]) == 0
    assert [json.loads(x)["id"] for x in limited.read_text().splitlines()] == ["d1"]
    assert got["d2"]["prompt"] == "Own prompt?"
    assert "error" not in got["d1"] and isinstance(got["d1"]["response"], str)


def test_manifest_resume_refuses_a_model_retrained_into_the_same_folder(checkpoint, tmp_path, capsys):
    """The folder path alone would resume the old model's answers: the weights' digest is recorded."""
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    write_tone(tmp_path / "a.wav", 1.0)
    manifest = tmp_path / "in.jsonl"
    manifest.write_text(json.dumps({"id": "u1", "audio": "a.wav", "prompt": "Hi"}) + "\n"
                        + json.dumps({"id": "u2", "audio": "a.wav", "prompt": "Hey"}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["infer", "--model", str(model), "--manifest", str(manifest), "--output", str(out),
            "--max-new-tokens", "2", "--limit", "1"]
    assert main(args) == 0
    state = load_file(str(model / "adapter.safetensors"))
    save_file({k: v + 0.01 for k, v in state.items()}, str(model / "adapter.safetensors"))  # "retrained"
    capsys.readouterr()
    assert main(args[:-2]) == 2
    err = capsys.readouterr().err
    assert "weights_sha256" in err and "other settings" in err
