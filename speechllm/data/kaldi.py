"""Kaldi data directories, both ways.

Read: ``wav.scp`` (required), ``segments``, ``text``, ``utt2spk``, ``spk2gender``, ``utt2dur`` and
any other ``utt2<name>`` file (an attribute, e.g. ``utt2lang``, ``utt2emotion``). Write: the same
files, sorted as Kaldi's ``utils/validate_data_dir.sh`` wants, plus ``spk2utt``.

``wav.scp`` entries are plain paths. An entry ending in ``|`` is a shell command whose standard
output is the audio (``sox x.flac -t wav - |``); running it executes arbitrary shell code taken
from the data dir, so such entries are refused unless ``allow_pipes=True``. With it, each
command is run once (``bash -c``, from ``root``) and its output is decoded and saved as a FLAC
file in ``pipe_audio_dir``, so the manifest points at ordinary files. That file is named from the
sanitised recording id and a hash of the command (:func:`pipe_audio_name`): an id cannot place it
outside the folder, and a changed command is run again rather than answered from a stale file.
Relative paths and commands are taken from ``root``, the folder Kaldi recipes run from (default:
the current folder).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

from speechllm.data.manifest import PROVENANCE_CORPUS, Utterance
from speechllm.errors import SpeechLLMError
from speechllm.utils.textfile import utf8_lines

# utt2* files that are not attributes of the utterance.
_NOT_ATTRIBUTES = {"utt2spk", "utt2dur", "utt2num_frames", "utt2uniq", "utt2warp", "utt2category"}
_GENDER_FROM_KALDI = {"m": "male", "f": "female"}
_GENDER_TO_KALDI = {"male": "m", "female": "f"}


class KaldiDirError(SpeechLLMError):
    """A Kaldi data dir that is missing files or has malformed lines (file and line named)."""


def _read_table(path: Path, min_fields: int = 2) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_no, [key, rest])`` of a Kaldi table: key, whitespace, the rest of the line."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(utf8_lines(f, path), start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(None, 1)
            if len(parts) < min_fields:
                raise KaldiDirError(f"{path}:{line_no}: expected '<key> <value>', got {line!r}")
            yield line_no, parts


def _read_map(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line_no, (key, value) in _read_table(path):
        if key in out:
            raise KaldiDirError(f"{path}:{line_no}: key {key!r} appears twice")
        out[key] = value.strip()
    return out


def _read_map_allow_empty(path: Path) -> dict[str, str]:
    """Like :func:`_read_map` but a key alone on its line maps to '' (an empty transcript)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for _, parts in _read_table(path, min_fields=1):
        out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


def _parse_float(path: Path, line_no: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise KaldiDirError(f"{path}:{line_no}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf"; no time can be either
        raise KaldiDirError(f"{path}:{line_no}: {what} {text!r} is not a finite number")
    return value


def pipe_audio_name(command: str, rec_id: str, root: Path) -> str:
    """File name of a pipe's decoded audio: the recording id made safe, plus a hash of the command.

    The id comes from the data dir and may hold ``/``, ``..`` or anything else, so only letters,
    digits, ``.``, ``_`` and ``-`` are kept (no leading dot) and the name can never leave the
    pipe-audio folder. The hash covers the command and the folder it runs from, so a changed
    command (other source file, other options) decodes again instead of reusing a stale file,
    and two ids that sanitise alike still get different names.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rec_id).lstrip(".")[:80] or "rec"
    digest = hashlib.sha256(json.dumps([command, str(root), rec_id]).encode("utf-8")).hexdigest()[:16]
    return f"{safe}-{digest}.flac"


def _decode_pipe(command: str, rec_id: str, root: Path, out_dir: Path, where: str) -> Path:
    """Run a wav.scp pipe command and store its audio in ``out_dir`` (see :func:`pipe_audio_name`)."""
    import soundfile as sf

    target = out_dir / pipe_audio_name(command, rec_id, root)
    if target.is_file():  # decoded by an earlier run of this very command
        return target
    proc = subprocess.run(["bash", "-c", command], cwd=root, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise KaldiDirError(f"{where}: command exited with status {proc.returncode}"
                            + (f": {err[-1]}" if err else ""))
    try:
        data, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    except Exception as e:
        raise KaldiDirError(f"{where}: the command's output is not audio soundfile can decode ({e})") from None
    from speechllm.audio.io import write_audio

    # A unique temporary name: two readers of the same data dir never write the same file.
    write_audio(target, data, sr, format="FLAC")
    return target


def read_kaldi_dir(
    data_dir: str | os.PathLike,
    allow_pipes: bool = False,
    *,
    root: str | os.PathLike | None = None,
    pipe_audio_dir: str | os.PathLike | None = None,
    corpus: str | None = None,
    split: str | None = None,
) -> list[Utterance]:
    """Read a Kaldi data dir into utterances (sorted by id).

    ``speaker`` comes from ``utt2spk``, ``transcript`` from ``text``, ``offset``/``duration`` from
    ``segments`` (else ``utt2dur``), ``gender`` from ``spk2gender`` (``m``/``f`` -> ``male``/
    ``female``) and one attribute per other ``utt2<name>`` file, all with provenance ``corpus``.
    Pipe entries in ``wav.scp`` need ``allow_pipes`` (see the module notes: it runs shell code);
    their audio is saved under ``pipe_audio_dir`` (default ``<data_dir>/pipe_audio``).
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise KaldiDirError(f"{d}: no such Kaldi data dir")
    wav_scp = d / "wav.scp"
    if not wav_scp.is_file():
        raise KaldiDirError(f"{wav_scp}: missing (a Kaldi data dir needs wav.scp)")
    root_dir = Path(root) if root is not None else Path.cwd()
    pipe_dir = Path(pipe_audio_dir) if pipe_audio_dir is not None else d / "pipe_audio"

    recordings: dict[str, Path] = {}
    for line_no, (rec_id, value) in _read_table(wav_scp):
        value = value.strip()
        where = f"{wav_scp}:{line_no}"
        if rec_id in recordings:
            raise KaldiDirError(f"{where}: recording id {rec_id!r} appears twice")
        if value.endswith("|"):
            if not allow_pipes:
                raise KaldiDirError(
                    f"{where}: {rec_id!r} is a shell pipe ({value!r}); pipes run arbitrary commands "
                    "from the data dir, so they are refused. Convert the audio to files, or pass "
                    "--allow-pipes (allow_pipes=True) if you trust this data dir"
                )
            recordings[rec_id] = _decode_pipe(value[:-1].strip(), rec_id, root_dir, pipe_dir, where)
            continue
        if len(value.split()) > 1:
            raise KaldiDirError(f"{where}: expected '<recording-id> <path>', got {value!r} "
                                "(paths with spaces and ark offsets are not supported)")
        if value.endswith(".ark") or ".ark:" in value:
            raise KaldiDirError(f"{where}: {value!r} is a Kaldi archive entry; only audio file paths are supported")
        path = Path(value)
        recordings[rec_id] = path if path.is_absolute() else (root_dir / path)

    # Segments: utterance -> (recording, start, end). Without it each recording is an utterance.
    segments: dict[str, tuple[str, float, float]] = {}
    seg_path = d / "segments"
    if seg_path.is_file():
        for line_no, (utt_id, rest) in _read_table(seg_path):
            fields = rest.split()
            if len(fields) != 3:
                raise KaldiDirError(f"{seg_path}:{line_no}: expected '<utt> <recording> <start> <end>'")
            rec_id = fields[0]
            start = _parse_float(seg_path, line_no, fields[1], "start")
            end = _parse_float(seg_path, line_no, fields[2], "end")
            if rec_id not in recordings:
                raise KaldiDirError(f"{seg_path}:{line_no}: recording {rec_id!r} is not in wav.scp")
            if end != -1 and end <= start:  # Kaldi allows end = -1: to the end of the recording
                raise KaldiDirError(f"{seg_path}:{line_no}: end {end} is not after start {start}")
            segments[utt_id] = (rec_id, start, end)
    else:
        segments = {rec: (rec, 0.0, -1.0) for rec in recordings}

    texts = _read_map_allow_empty(d / "text")
    utt2spk = _read_map(d / "utt2spk")
    spk2gender = _read_map(d / "spk2gender")
    utt2dur: dict[str, float] = {}
    if (d / "utt2dur").is_file():
        for line_no, (utt_id, value) in _read_table(d / "utt2dur"):
            utt2dur[utt_id] = _parse_float(d / "utt2dur", line_no, value.strip(), "duration")
    extra_attrs: dict[str, dict[str, str]] = {}
    for f in sorted(d.glob("utt2*")):
        if f.is_file() and f.name not in _NOT_ATTRIBUTES:
            extra_attrs[f.name[len("utt2"):]] = _read_map(f)

    utterances: list[Utterance] = []
    for utt_id in sorted(segments):
        rec_id, start, end = segments[utt_id]
        duration = (end - start) if end != -1 else utt2dur.get(utt_id)
        utt = Utterance(
            id=utt_id,
            audio=str(recordings[rec_id]),
            offset=start,
            duration=duration,
            speaker=utt2spk.get(utt_id),
            transcript=texts.get(utt_id),
            corpus=corpus,
            split=split,
        )
        if utt.speaker is not None and utt.speaker in spk2gender:
            raw = spk2gender[utt.speaker].lower()
            utt.set_attribute("gender", _GENDER_FROM_KALDI.get(raw, raw), PROVENANCE_CORPUS)
        for name, table in extra_attrs.items():
            if utt_id in table:
                utt.set_attribute(name, table[utt_id], PROVENANCE_CORPUS)
        utterances.append(utt)
    return utterances


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def write_kaldi_dir(utterances: Iterable[Utterance], data_dir: str | os.PathLike) -> Path:
    """Write utterances as a Kaldi data dir; returns its path.

    Files: ``wav.scp`` (absolute paths), ``segments`` (only when some utterance is a segment of a
    longer file or two share a file), ``text``, ``utt2spk``/``spk2utt`` (an utterance without a
    speaker is its own speaker, Kaldi's convention), ``spk2gender``, ``utt2dur`` (where the
    duration is known), and ``utt2<name>`` for every other single-line attribute. Lines are
    sorted by key (byte order, as ``LC_ALL=C sort``). Kaldi also wants utterance ids to start with
    their speaker id; that is not enforced here.
    """
    utts = sorted(utterances, key=lambda u: u.id.encode("utf-8"))
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    ids = [u.id for u in utts]
    if len(set(ids)) != len(ids):
        raise KaldiDirError(f"{d}: duplicate utterance ids; Kaldi needs unique ids")
    for u in utts:
        if u.audio is None:
            raise KaldiDirError(f"{d}: utterance {u.id!r} has no audio; wav.scp needs a path")
        if any(c.isspace() for c in u.id):
            raise KaldiDirError(f"{d}: utterance id {u.id!r} contains whitespace")

    by_file: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        by_file[str(Path(u.audio_path).resolve())].append(u)  # type: ignore[arg-type]
    need_segments = any(
        len(group) > 1 or group[0].offset > 0 or (group[0].duration is not None and _is_partial(group[0]))
        for group in by_file.values()
    )

    wav_lines: list[str] = []
    seg_lines: list[str] = []
    if need_segments:
        used: set[str] = set()
        for path, group in by_file.items():
            rec_id = _unique(Path(path).stem.replace(" ", "_"), used)
            wav_lines.append(f"{rec_id} {path}")
            for u in group:
                end = f"{u.offset + u.duration:.3f}" if u.duration is not None else "-1"
                seg_lines.append(f"{u.id} {rec_id} {u.offset:.3f} {end}")
    else:
        wav_lines = [f"{u.id} {Path(u.audio_path).resolve()}" for u in utts]  # type: ignore[arg-type]

    speakers = {u.id: (u.speaker if u.speaker else u.id) for u in utts}
    spk2utt: dict[str, list[str]] = defaultdict(list)
    for u in utts:
        spk2utt[speakers[u.id]].append(u.id)
    spk2gender: dict[str, str] = {}
    for u in utts:
        g = u.attributes.get("gender")
        if isinstance(g, str) and g.lower() in _GENDER_TO_KALDI:
            spk2gender.setdefault(speakers[u.id], _GENDER_TO_KALDI[g.lower()])

    attr_lines: dict[str, list[str]] = defaultdict(list)
    for u in utts:
        for name, value in u.attributes.items():
            if name == "gender" or value is None or not name.replace("_", "").isalnum():
                continue
            text = _one_line(value)
            if text:
                attr_lines[f"utt2{name}"].append(f"{u.id} {text}")

    def write(name: str, lines: list[str]) -> None:
        lines = sorted(lines, key=lambda s: s.encode("utf-8"))
        (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write("wav.scp", wav_lines)
    if seg_lines:
        write("segments", seg_lines)
    elif (d / "segments").exists():
        (d / "segments").unlink()  # a stale one would re-cut the recordings
    write("text", [f"{u.id} {_one_line(u.transcript)}" for u in utts if u.transcript is not None])
    write("utt2spk", [f"{u.id} {speakers[u.id]}" for u in utts])
    write("spk2utt", [f"{spk} {' '.join(us)}" for spk, us in spk2utt.items()])
    if spk2gender:
        write("spk2gender", [f"{spk} {g}" for spk, g in spk2gender.items()])
    durs = [f"{u.id} {u.duration:.3f}" for u in utts if u.duration is not None]
    if durs:
        write("utt2dur", durs)
    for name, lines in attr_lines.items():
        if name not in _NOT_ATTRIBUTES:
            write(name, lines)
    return d


def _is_partial(u: Utterance) -> bool:
    """Whether ``u`` covers less than its whole file (read from the header; unknown -> False)."""
    from speechllm.audio import AudioError, audio_info

    try:
        total = audio_info(u.audio_path).duration  # type: ignore[arg-type]
    except AudioError:
        return False
    return u.offset + (u.duration or 0.0) < total - 0.01


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate)
    return candidate
