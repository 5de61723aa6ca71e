"""Thread choice (``auto`` counts idle cores) and progress lines for logs (stderr not a terminal)."""

from __future__ import annotations

import io
import os

import pytest

from speechllm.utils import progress, threads


@pytest.mark.parametrize(("cores", "busy", "expected"), [(2, 0.05, 2), (2, 1.0, 1), (2, 1.9, 1),
                                                         (2, 2.0, 1), (16, 3.4, 13)])
def test_auto_threads_leave_the_busy_cores_alone(monkeypatch, cores, busy, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda sample_seconds=0.0: busy)
    assert threads.auto_num_threads() == expected


def test_auto_is_read_from_the_environment_and_exported_as_a_number(monkeypatch):
    monkeypatch.setattr(threads, "auto_num_threads", lambda: 3)
    monkeypatch.setenv("SPEECHLLM_NUM_THREADS", "auto")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve_num_threads() == 3
    assert threads.resolve_num_threads(2) == 2  # an explicit request wins
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)
    assert threads.set_num_threads("auto") == 3
    assert os.environ["OMP_NUM_THREADS"] == "3"  # OpenMP takes numbers only


def test_busy_cores_measures_this_machine():
    busy = threads.busy_cores(0.05)
    assert busy is not None and 0.0 <= busy <= os.cpu_count()


def test_cli_accepts_auto_and_rejects_zero(capsys):
    from speechllm.cli import build_parser

    assert build_parser().parse_args(["--num-threads", "auto", "env"]).num_threads == "auto"
    assert build_parser().parse_args(["--num-threads", "2", "env"]).num_threads == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--num-threads", "0", "env"])
    assert "positive integer or 'auto'" in capsys.readouterr().err


def test_log_line_progress_prints_count_rate_and_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = progress.LogLineProgress(400, "generate", "row", interval=30, stream=out)
    clock[0] += 10
    bar.update(40)  # before the interval: nothing printed
    assert out.getvalue() == ""
    clock[0] += 30
    bar.set_postfix_str("52.0 tok/s")
    bar.update(60)
    assert out.getvalue() == "generate: 100/400 row (25%), 2.50 row/s, elapsed 0:40, ETA 2:00, 52.0 tok/s\n"
    clock[0] += 3700
    bar.update(300)
    bar.close()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("generate: 400/400 row (100%)") and "elapsed 1:02:20" in last and "ETA" not in last
    assert len(out.getvalue().splitlines()) == 2  # the final count once, not again at close


def test_progress_bar_off_a_terminal_is_log_lines_and_disabled_is_silent(capsys):
    bar = progress.progress_bar(3, "describe", "utt")  # pytest captures stderr: not a terminal
    assert isinstance(bar, progress.LogLineProgress)
    bar.update(3)
    bar.close()
    assert "describe: 3/3 utt (100%)" in capsys.readouterr().err
    quiet = progress.progress_bar(3, "describe", "utt", enabled=False)
    quiet.update(3)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_training_curves_keep_the_last_row_of_a_repeated_step_and_plot(tmp_path):
    """A resumed run may log a step twice: the curve takes the last value, and the PNG is drawn."""
    import json

    from speechllm.train.curves import last_per_step, moving_average, plot_training_curves

    rows = [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 11)] + [{"step": 5, "loss": 9.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 1')
    (tmp_path / "valid.jsonl").write_text(json.dumps({"step": 10, "valid_loss": 2.5}) + "\n")
    steps, values = last_per_step(rows, "loss")
    assert steps == list(range(1, 11)) and values[4] == 9.0
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    png = plot_training_curves(tmp_path)
    assert png == tmp_path / "plots" / "training_curves.png" and png.read_bytes()[:4] == b"\x89PNG"
    assert plot_training_curves(tmp_path / "empty") is None


def test_governor_follows_load_that_arrives_mid_run_and_leaves_own_cpu_out(monkeypatch):
    """/proc/stat counts this process's own threads as busy too: only other processes' time may
    take cores away. Jiffies over 5 s on a 2-core machine: 1000 ticks in all per count."""
    import torch

    set_to = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: set_to[-1] if set_to else 2)
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    clock = [0.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    # (idle, total) of /proc/stat and this process's ticks, one reading per count.
    readings = iter([((0, 0), 0),          # start
                     ((0, 1000), 1000),    # both cores busy, all of it ours: nobody else
                     ((0, 2000), 1500),    # both busy, half ours: another job took a core
                     ((900, 3000), 1600)])  # the other job ended
    current = {}

    def cpu():
        current["r"] = next(readings)
        return current["r"][0]

    monkeypatch.setattr(threads, "_cpu_times", cpu)
    monkeypatch.setattr(threads, "_own_cpu_ticks", lambda: current["r"][1])
    governor = threads.ThreadGovernor(interval_seconds=5)
    assert governor.maybe_adjust() is None  # within the interval: no count
    clock[0] = 5
    assert governor.maybe_adjust() is None and set_to == []  # our own load takes nothing away
    clock[0] = 10
    assert governor.maybe_adjust() == 1 and set_to == [1]
    clock[0] = 15
    assert governor.maybe_adjust() == 2 and set_to == [1, 2]


def test_governor_reads_this_machine_without_error():
    governor = threads.ThreadGovernor(interval_seconds=0.0)
    busy = governor._others_busy_cores(threads._cpu_times(), threads._own_cpu_ticks())
    assert busy is None or 0.0 <= busy <= os.cpu_count()
