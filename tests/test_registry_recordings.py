"""egs/synthetic/local/registry_recordings.py: real recordings taken from a registry package's
archive, checked by SHA-256 (the archive is faked here: tests never download)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "egs" / "synthetic" / "local" / "registry_recordings.py"


@pytest.fixture()
def module(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    spec = importlib.util.spec_from_file_location("registry_recordings", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_archive(mod, wav: bytes) -> None:
    from speechllm.assets.registry import cache_dir

    folder = cache_dir() / "cache" / "registry_recordings"
    folder.mkdir(parents=True)
    with tarfile.open(folder / mod.ARCHIVE, "w:gz") as tar:
        for name, data in (("arctic_a0007.wav", wav), ("COPYING", b"licence")):
            info = tarfile.TarInfo(mod.MEMBER + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_writes_labels_for_a_clip_with_the_expected_digest(module, tmp_path, monkeypatch):
    wav = b"RIFF fake wave"
    _fake_archive(module, wav)
    sha, *rest = module.CLIPS["arctic_a0007.wav"]
    monkeypatch.setitem(module.CLIPS, "arctic_a0007.wav", (hashlib.sha256(wav).hexdigest(), *rest))
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path / "out")])
    assert module.main() == 0
    labels = (tmp_path / "out" / "LABELS.tsv").read_text().splitlines()
    assert labels[0].split("\t")[:4] == ["file", "kind", "speaker", "gender"]
    assert labels[1].split("\t")[:4] == ["arctic_a0007.wav", "speech", "CMU ARCTIC awb", "male"]
    assert (tmp_path / "out" / "arctic_a0007.wav").read_bytes() == wav


def test_a_clip_with_another_digest_is_left_out_with_a_reason(module, tmp_path, monkeypatch, capsys):
    _fake_archive(module, b"not the recording")
    monkeypatch.setattr("sys.argv", ["x", str(tmp_path / "out")])
    assert module.main() == 1
    assert "left out: arctic_a0007.wav has SHA-256" in capsys.readouterr().err
    assert not (tmp_path / "out" / "LABELS.tsv").exists()
