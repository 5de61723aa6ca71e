"""speechllm-infer with the real offline Whisper tiny.en and SmolLM2-135M-Instruct on real audio."""

from __future__ import annotations

import csv
import json

import pytest

from speechllm.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_checkpoint(offline_whisper_tiny_en, offline_smollm2, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "ckpt"
    rc = main(["init-model", "--encoder", "offline:whisper-tiny.en", "--llm", "offline:smollm2-135m-instruct",
               "--adapter", "qformer", str(out)])
    assert rc == 0
    return out


def test_infer_real_models_transcribe_and_answer(real_checkpoint, real_audio_dir, tmp_path, capsys):
    labels = list(csv.DictReader(open(real_audio_dir / "LABELS.tsv", encoding="utf-8"), delimiter="\t"))
    speech = next(r for r in labels if r["file"] == "198-209-0000.ogg")
    manifest = tmp_path / "in.jsonl"
    rows = [
        {"id": "speech", "audio": str(real_audio_dir / speech["file"]),
         "prompt": "What can you hear from the audio?"},
        {"id": "bird", "audio": str(real_audio_dir / "robin-chirp.ogg"), "prompt": "What can you hear?"},
        {"id": "text", "prompt": "What is the capital of France? Answer in one word."},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    rc = main(["infer", "--model", str(real_checkpoint), "--manifest", str(manifest), "--output", str(out),
               "--max-new-tokens", "24"])
    assert rc == 0
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert speech["key_phrase"].lower() in got["speech"]["transcripts"][0].lower()
    assert got["speech"]["response"].strip()
    assert got["bird"]["transcripts"] == [""]  # silero-vad: no speech, no ASR
    assert "paris" in got["text"]["response"].lower()  # text only: the base LLM's own answer


def test_single_request_cli_prints_a_reply(real_checkpoint, real_audio_dir, capsys):
    clip = real_audio_dir / "3436-172162-0000.ogg"
    rc = main(["infer", "--model", str(real_checkpoint), "--audio", str(clip), "--prompt", "Describe the audio.",
               "--max-new-tokens", "16", "--timings", "--show-transcript"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out.strip()
    assert "rtf=" in captured.err
    # The transcript the model heard (Whisper's, after VAD) is shown, with the clip's key phrase.
    heard = next(line for line in captured.err.splitlines() if line.startswith("transcript (heard) "))
    assert str(clip) in heard and "the adventure of the cart" in heard.lower()


def test_manifest_gold_transcripts_can_be_ignored_so_the_model_hears_its_own(real_checkpoint, real_audio_dir,
                                                                             tmp_path):
    """A data manifest's gold transcript flatters the result; the recipe's stage 6 ignores it."""
    manifest = tmp_path / "data.jsonl"
    manifest.write_text(json.dumps({"id": "r", "audio": str(real_audio_dir / "5703-47212-0000.ogg"),
                                    "transcript": "GOLD TEXT NOBODY SAID"}) + "\n")
    for flag, expected_source in (([], "manifest"), (["--ignore-manifest-transcripts"], "model")):
        out = tmp_path / f"out-{expected_source}.jsonl"
        assert main(["infer", "--model", str(real_checkpoint), "--manifest", str(manifest), "--output", str(out),
                     "--prompt", "Hi", "--max-new-tokens", "2", *flag]) == 0
        row = json.loads(out.read_text())
        assert row["transcript_source"] == expected_source
        if expected_source == "manifest":
            assert row["transcripts"] == ["GOLD TEXT NOBODY SAID"]
        else:
            assert "scarlet smoke stack" in row["transcripts"][0].lower()
