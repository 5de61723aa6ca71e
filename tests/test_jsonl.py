"""Crash-safe resumable JSONL and sharding."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from speechllm.errors import SpeechLLMError
from speechllm.utils.jsonl import (
    JsonlFormatError,
    OutputLockedError,
    ResumableJsonlWriter,
    SettingsChangedError,
    iter_jsonl,
    parse_shard,
    read_jsonl,
    shard_of,
)

# A second process that opens a writer on argv[1], writes one row, says so, and keeps the file
# open until a line arrives on its stdin (no sleeps: the test decides when it lets go).
HOLD_WRITER = textwrap.dedent("""
    import sys
    from speechllm.utils.jsonl import ResumableJsonlWriter
    w = ResumableJsonlWriter(sys.argv[1])
    w.write({"id": "held"})
    print("writing", flush=True)
    sys.stdin.readline()
    w.close()
""")


class HeldWriter:
    """Context manager: another process writing ``path`` for as long as the block runs."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(self.path)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "writing"
        return self.proc

    def __exit__(self, *exc):
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=120) == 0


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


def test_second_writer_process_is_refused_at_once(tmp_path):
    path = tmp_path / "out.jsonl"
    with HeldWriter(path):
        message = rf"^{re.escape(str(path))}: another process is writing this file; wait for it to finish"
        with pytest.raises(OutputLockedError, match=message):
            ResumableJsonlWriter(path)
        with pytest.raises(OutputLockedError, match=message):
            ResumableJsonlWriter(path, resume=False)  # refused before it could empty the file
        assert read_jsonl(path) == [{"id": "held"}]
    # The holder closed its writer: the lock went with it.
    with ResumableJsonlWriter(path) as w:
        assert w.done_ids == {"held"}
        w.write({"id": "next"})
    assert [r["id"] for r in read_jsonl(path)] == ["held", "next"]


def test_lock_of_a_killed_writer_does_not_block_the_rerun(tmp_path):
    path = tmp_path / "out.jsonl"
    script = textwrap.dedent(f"""
        import os, signal
        from speechllm.utils.jsonl import ResumableJsonlWriter
        w = ResumableJsonlWriter({str(path)!r})
        w.write({{"id": "a"}})
        os.kill(os.getpid(), signal.SIGKILL)  # dies holding the lock, without close()
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    with ResumableJsonlWriter(path) as w:
        assert w.done_ids == {"a"}


def test_settings_are_recorded_and_a_resume_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    settings = {"model": "m1", "sampling": {"temperature": 0.0, "top_p": 1.0}, "pool": ("a", "b")}
    with ResumableJsonlWriter(path, settings=settings) as w:
        w.write({"id": "a"})
    record = tmp_path / "out.jsonl.settings.json"
    assert json.loads(record.read_text()) == {**settings, "pool": ["a", "b"]}
    with ResumableJsonlWriter(path, settings=settings) as w:  # same settings (a tuple read back as a list)
        assert w.done_ids == {"a"}
    changed = {**settings, "sampling": {"temperature": 0.7, "top_p": 1.0}}
    with pytest.raises(SettingsChangedError,
                       match=r"its rows were written with other settings \(sampling.temperature: 0.0 in the "
                             r"file, 0.7 now\); continuing would mix two configurations"):
        ResumableJsonlWriter(path, settings=changed)
    assert json.loads(record.read_text())["sampling"]["temperature"] == 0.0  # the record is kept
    with ResumableJsonlWriter(path, settings=changed, resume=False) as w:  # starting over is allowed
        assert not w.done_ids
    assert json.loads(record.read_text())["sampling"]["temperature"] == 0.7
    # A key the record does not know (a setting added later) is not a change.
    with ResumableJsonlWriter(path, settings={**changed, "new_setting": 1}):
        pass


def test_rows_without_a_settings_record_are_not_resumed(tmp_path):
    path = tmp_path / "foreign.jsonl"
    path.write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(SettingsChangedError, match="has rows but no record of the settings"):
        ResumableJsonlWriter(path, settings={"a": 1})
    yaml_record = tmp_path / "foreign.describe.yaml"
    yaml_record.write_text("a: 1\n")
    with ResumableJsonlWriter(path, settings={"a": 1}, settings_path=yaml_record) as w:
        assert w.done_ids == {"x"}
    with pytest.raises(SettingsChangedError, match=r"a: 1 in the file, 2 now"):
        ResumableJsonlWriter(path, settings={"a": 2}, settings_path=yaml_record)


def test_a_file_system_without_locks_warns_and_writes(tmp_path, monkeypatch, caplog):
    import errno

    import speechllm.utils.jsonl as jsonl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(jsonl.fcntl, "flock", no_locks)
    path = tmp_path / "out.jsonl"
    with caplog.at_level("WARNING"), ResumableJsonlWriter(path) as w:
        w.write({"id": "a"})
    assert read_jsonl(path) == [{"id": "a"}]
    assert f"{path}: cannot lock (No locks available)" in caplog.text
