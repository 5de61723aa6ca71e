"""Atomic writes: complete or absent, and readable like a plain open() would make them."""

from __future__ import annotations

import os
import stat

import pytest

from speechllm.utils.fs import atomic_open, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_umask_permissions_not_mkstemp_0600(tmp_path, umask_022):
    from speechllm.data.manifest import Utterance, write_manifest
    from speechllm.generate.merge import _concatenate

    atomic_write_text(tmp_path / "a.txt", "x")
    write_manifest(tmp_path / "m.jsonl", [Utterance(id="u", audio="a.wav")])
    (tmp_path / "s.jsonl").write_text('{"id": 1}\n')
    _concatenate([tmp_path / "s.jsonl"], tmp_path / "merged.jsonl")
    for name in ("a.txt", "m.jsonl", "merged.jsonl"):
        assert mode(tmp_path / name) == 0o644, name


def test_atomic_open_leaves_nothing_on_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target, "wb") as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
