"""Crash-safe resumable JSONL and sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from speechllm.errors import SpeechLLMError
from speechllm.utils.jsonl import (
    JsonlFormatError,
    ResumableJsonlWriter,
    iter_jsonl,
    parse_shard,
    read_jsonl,
    shard_of,
)


def test_resume_repairs_torn_tail_and_skips_done(tmp_path):
    path = tmp_path / "out.jsonl"
    with ResumableJsonlWriter(path) as w:
        w.write({"id": "a", "x": 1})
        w.write({"id": "b", "x": 2})
    with open(path, "a") as f:
        f.write('{"id": "c", "x"')  # a writer killed mid-row
    w = ResumableJsonlWriter(path)
    assert w.done_ids == {"a", "b"} and w.torn_bytes == len('{"id": "c", "x"')
    with pytest.raises(ValueError, match="already written"):
        w.write({"id": "a"})
    w.write({"id": "c", "x": 3})
    w.close()
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_sigkill_then_restart_yields_each_id_once(tmp_path):
    path = tmp_path / "out.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from speechllm.utils.jsonl import ResumableJsonlWriter
        w = ResumableJsonlWriter({str(path)!r})
        for i in range(100):
            if str(i) in w.done_ids:
                continue
            w.write({{"id": str(i), "pad": "x" * 1000}})
            if i == 37 and len(sys.argv) > 1:
                os.kill(os.getpid(), signal.SIGKILL)
        w.close()
    """)
    first = subprocess.run([sys.executable, "-c", script, "kill"])
    assert first.returncode == -9
    assert len(read_jsonl(path)) == 38
    subprocess.run([sys.executable, "-c", script], check=True)
    ids = [r["id"] for r in read_jsonl(path)]
    assert sorted(ids, key=int) == [str(i) for i in range(100)] and len(ids) == len(set(ids))


def test_bad_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1}\n\n[1, 2]\n')
    with pytest.raises(JsonlFormatError, match=rf"{path}:3: expected a JSON object"):
        list(iter_jsonl(path))
    path.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(JsonlFormatError, match=rf"{path}:2: not valid JSON"):
        list(iter_jsonl(path))


def test_shards_partition_ids():
    ids = [f"utt{i}" for i in range(1000)]
    shards = [shard_of(i, 4) for i in ids]
    assert set(shards) == {0, 1, 2, 3}
    assert all(150 < shards.count(s) < 350 for s in range(4))
    assert shard_of("utt7", 4) == shard_of("utt7", 4)
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(SpeechLLMError, match="--shard"):
            parse_shard(bad)


def test_writer_without_resume_starts_fresh(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text(json.dumps({"id": "old"}) + "\n")
    with ResumableJsonlWriter(path, resume=False) as w:
        w.write({"id": "new"})
    assert read_jsonl(path) == [{"id": "new"}]
    assert os.path.getsize(path) > 0
