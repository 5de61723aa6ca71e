"""Frozen-encoder feature cache: the tapped-layer features (fp16) and transcripts of every audio
row, computed once and read back by training instead of running Whisper each step.

Layout of a cache folder::

    cache_key.json     what the features depend on (encoder identity, taps, dtype, audio
                       settings, transcript source) and its hash
    index.json         id -> {audio_key, shard, taps, windows, valid_frames, num_samples, transcript}
    shard-00000.safetensors ...   "<id>/<tap index>" -> (windows, frames, d_model) fp16

``audio_key`` (:func:`speechllm.train.data.audio_source_key`) says which audio an id's features
came from: path, offset, duration, file size and mtime. A build re-encodes an id whose row now
names other audio (or whose file was rewritten), and training skips and counts such a row as
``stale_features`` until the cache is rebuilt, so one audio's features never reach another's row.
An id given two different audios by the files of one build is an error naming both lines.

``frames`` is 1500 (the whole 30 s window) when the adapter reads Whisper's padded frames
(DeSTA2's Q-Former, ``qformer_context: window``), else only the longest real length among the
audio's windows: about 10x less disk and I/O for clips of a few seconds. The read side pads a
batch back to a common length with zeros, which such adapters never look at.

An unsharded build holds an exclusive lock on ``.build.lock`` in the folder while it runs: a
second process building the same folder (two trainings started on one cache) waits, then finds
the rows cached, instead of both writing ``shard-00002.safetensors`` (seen: the second one's
rename failed with ENOENT and the training stopped).

Sharded builds (``cache-features --shard i/N``, one process per GPU or machine, all writing
into one folder) keep the rows whose ``crc32(id) % N == i`` (the rule of every other stage) and
write their own files, so that they never write the same file::

    index.<hash>.shard-<i>-of-<N>.json            that shard's entries (rewritten after each 256 rows)
    shard-<hash>-<i>-of-<N>-00000.safetensors ...

``<hash>`` is the cache key's hash: a shard started after the key changed removes only files of
other hashes, which no shard of this key writes, so shards may start in any order. The read side
joins ``index.json`` and every shard index of the current hash (a shared index: training can
start without a merge); ``cache-features --merge`` folds the shard indexes into ``index.json``
and reports the ids still missing.

Training compares the cache key with its own model's key and refuses a stale cache with a
message saying how to rebuild it: a change of encoder, taps or audio settings invalidates it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from speechllm.errors import SpeechLLMError
from speechllm.models.transcript import training_transcript

log = logging.getLogger(__name__)

KEY_FILE = "cache_key.json"
INDEX_FILE = "index.json"
ROWS_PER_SHARD = 256
BUILD_LOCK = ".build.lock"
FORMAT_VERSION = 3  # 3: entries carry audio_key and taps


class FeatureCacheError(SpeechLLMError):
    """A cache that is missing, stale (built for another encoder/taps/settings) or incomplete."""


def cache_key(model) -> dict[str, Any]:
    """What cached features depend on, with a hash over it."""
    enc = model.bases.get("encoder", {})
    fe = model.encoder.feature_extractor
    key = {
        "format_version": FORMAT_VERSION,
        "encoder_ref": enc.get("ref"), "encoder_sha256": enc.get("sha256"), "encoder_commit": enc.get("commit"),
        "taps": list(model.encoder.layers),
        "sample_rate": 16000, "window_seconds": 30,
        "n_mels": getattr(fe, "feature_size", None), "hop_length": getattr(fe, "hop_length", None),
        "transcript_source": model.config.transcript_source, "use_vad": model.config.use_vad,
        "max_transcript_tokens": model.config.max_transcript_tokens, "asr_language": model.config.asr_language,
        "frames": "window" if _reads_padding(model) else "valid",
    }
    tap_point = getattr(model.encoder, "tap_point", "hidden_states")
    if tap_point != "hidden_states":  # keyed only when set, so caches built before the option stay valid
        key["tap_point"] = tap_point
    if model.config.transcript_source == "whisper":  # cached Whisper transcripts: how they were decoded
        key["asr_decoding"] = "generate"  # HF generate with Whisper's suppress lists (issue 18 item 4)
    key["hash"] = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return key


def _reads_padding(model) -> bool:
    return bool(getattr(model.adapter, "reads_padding", True))


def shard_index_name(key_hash: str, shard: int, num_shards: int) -> str:
    """The index file of one shard of a sharded build (module docstring)."""
    return f"index.{key_hash}.shard-{shard}-of-{num_shards}.json"


def read_index(folder: Path, key_hash: str) -> dict[str, Any]:
    """``index.json`` joined with every shard index of ``key_hash`` (a sharded build's shared
    index); a shard's entry wins over index.json's (it was written later for that id)."""
    index: dict[str, Any] = {}
    if (folder / INDEX_FILE).is_file():
        index.update(json.loads((folder / INDEX_FILE).read_text()))
    for part in sorted(folder.glob(f"index.{key_hash}.shard-*-of-*.json")):
        index.update(json.loads(part.read_text()))
    return index


def merge_shards(out_dir: str | Path, rows_files: list[str] | None = None) -> dict[str, int]:
    """Fold the shard indexes of the folder's key into ``index.json`` (atomically; then remove
    them) and count the entries; with ``rows_files``, also the ids of those rows not cached yet
    (``missing``: re-run the shards that lack them, a re-run skips what is cached)."""
    from speechllm.utils.fs import atomic_write_text

    out = Path(out_dir)
    if not (out / KEY_FILE).is_file():
        raise FeatureCacheError(f"{out}: no {KEY_FILE}; build the shards with `speechllm cache-features --shard i/N`")
    key_hash = json.loads((out / KEY_FILE).read_text())["hash"]
    parts = sorted(out.glob(f"index.{key_hash}.shard-*-of-*.json"))
    index = read_index(out, key_hash)
    atomic_write_text(out / INDEX_FILE, json.dumps(index))
    for part in parts:
        part.unlink()
    counts = {"entries": len(index), "errors": sum(1 for e in index.values() if "error" in e),
              "shard_indexes": len(parts)}
    if rows_files:
        counts["missing"] = sum(1 for rid in _rows_of(rows_files).ids if rid not in index)
    return counts


def build_cache(model, rows_files: list[str], out_dir: str | Path, *, batch_size: int = 8,
                rows_per_shard: int = ROWS_PER_SHARD, progress: bool = True,
                shard: tuple[int, int] = (0, 1)) -> dict[str, int]:
    """Encode every audio row of ``rows_files`` into ``out_dir`` (skipping ids already cached with
    the same key). Returns counts: cached, skipped (bad audio, by kind). Progress (rows, audio
    seconds per second) goes to a bar on a terminal, else to a log line every 30 s.

    ``shard=(i, N)`` with N > 1 encodes only the rows of shard ``i`` (``crc32(id) % N``) into the
    shard's own files (module docstring); shards of one key may run at the same time. An
    unsharded build waits for any other unsharded build of the same folder to finish first."""
    from speechllm.utils.fs import exclusive_lock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if shard[1] > 1:
        return _build_cache(model, rows_files, out, batch_size, rows_per_shard, progress, shard)
    with exclusive_lock(out / BUILD_LOCK, on_wait=lambda: log.info(
            "feature cache %s: another process is building it; waiting for it to finish", out)):
        return _build_cache(model, rows_files, out, batch_size, rows_per_shard, progress, shard)


def _build_cache(model, rows_files: list[str], out: Path, batch_size: int, rows_per_shard: int,
                 progress: bool, shard: tuple[int, int]) -> dict[str, int]:
    from safetensors.torch import save_file

    from speechllm.audio import SAMPLE_RATE, AudioError, load_audio
    from speechllm.train.data import audio_source_key
    from speechllm.utils.fs import atomic_write_text
    from speechllm.utils.jsonl import shard_of

    key = cache_key(model)
    index: dict[str, Any] = {}
    old = json.loads((out / KEY_FILE).read_text()) if (out / KEY_FILE).is_file() else {}
    sharded = shard[1] > 1
    if sharded:
        if old.get("hash") != key["hash"]:
            # Only what another key left: files of this key may be a concurrent shard's.
            for stale in [out / INDEX_FILE, *out.glob("index.*.json"), *out.glob("shard-*.safetensors")]:
                if key["hash"] not in stale.name:
                    stale.unlink(missing_ok=True)
            atomic_write_text(out / KEY_FILE, json.dumps(key, indent=2) + "\n")
        index = read_index(out, key["hash"])  # what any shard (or an unsharded build) cached
        own_index = out / shard_index_name(key["hash"], *shard)
        mine = json.loads(own_index.read_text()) if own_index.is_file() else {}
    elif old.get("hash") == key["hash"]:
        index = read_index(out, key["hash"])  # continue an interrupted, partial or sharded build
    else:
        # A fresh build: clear what another key left, then write this key first, so that a build
        # stopped half-way continues from its finished shards instead of starting over.
        for stale in [out / INDEX_FILE, *out.glob("index.*.json"), *out.glob("shard-*.safetensors")]:
            stale.unlink(missing_ok=True)
        atomic_write_text(out / KEY_FILE, json.dumps(key, indent=2) + "\n")
    keep_padding = _reads_padding(model)
    rows = _rows_of(rows_files)
    # One pass over the rows for their audio keys: an id is encoded again when its audio changed.
    keys = [audio_source_key(rows.read(i)) for i in range(len(rows))]
    todo = [i for i, (rid, k) in enumerate(zip(rows.ids, keys)) if index.get(rid, {}).get("audio_key") != k
            and (not sharded or shard_of(str(rid), shard[1]) == shard[0])]
    counts: dict[str, int] = {"cached": 0}
    shard_no = len({v["shard"] for v in (mine if sharded else index).values() if "shard" in v})
    prefix = f"shard-{key['hash']}-{shard[0]}-of-{shard[1]}-" if sharded else "shard-"
    from speechllm.utils.progress import progress_bar

    bar = progress_bar(len(todo), "cache-features", "row", enabled=progress)
    audio_seconds, start_time = 0.0, time.perf_counter()
    for start in range(0, len(todo), rows_per_shard):
        tensors: dict[str, torch.Tensor] = {}
        shard_file = f"{prefix}{shard_no:05d}.safetensors"
        entries = {}
        chunk = todo[start:start + rows_per_shard]
        for b in range(0, len(chunk), batch_size):
            waves, metas = [], []
            for i in chunk[b:b + batch_size]:
                row = rows.read(i)
                try:
                    wave = load_audio(row["audio"], offset=float(row.get("offset") or 0.0), duration=row.get("duration"),
                                      max_seconds=model.config.max_audio_seconds)
                except AudioError as e:
                    counts[e.kind] = counts.get(e.kind, 0) + 1
                    # Recorded, so that training skips and counts the row like a bad file.
                    entries[str(row["id"])] = {"audio_key": keys[i], "error": e.kind, "message": str(e)}
                    continue
                waves.append(wave)
                metas.append((row, keys[i]))
            if not waves:
                continue
            given = [training_transcript(r.get("transcript"), model.config) for r, _ in metas]
            encoded, texts = model.encode_audio(waves, given, training=True)
            w = 0
            for (row, key), wave, text, n in zip(metas, waves, texts, encoded.windows_per_audio):
                rid = str(row["id"])
                frames = None if keep_padding else max(encoded.valid_frames[w:w + n])
                for j, tap in enumerate(encoded.taps):
                    tensors[f"{rid}/{j}"] = tap[w:w + n, :frames].to("cpu", torch.float16).contiguous()
                # A rebuilt id points at its new shard; the old shard's copy is never read again.
                entries[rid] = {"audio_key": key, "shard": shard_file, "taps": len(encoded.taps), "windows": n,
                                "valid_frames": encoded.valid_frames[w:w + n], "num_samples": len(wave),
                                "transcript": text}
                w += n
                counts["cached"] += 1
                audio_seconds += len(wave) / SAMPLE_RATE
            bar.update(len(chunk[b:b + batch_size]))
            bar.set_postfix_str(f"{audio_seconds / max(time.perf_counter() - start_time, 1e-9):.1f} audio-s/s")
        if tensors:
            tmp = out / f".{shard_file}.tmp"
            save_file(tensors, str(tmp))
            tmp.replace(out / shard_file)
            shard_no += 1
        if entries and sharded:
            mine.update(entries)
            atomic_write_text(own_index, json.dumps(mine))
        elif entries:
            index.update(entries)
            atomic_write_text(out / INDEX_FILE, json.dumps(index))
    bar.close()
    if sharded:
        if not own_index.exists():
            atomic_write_text(own_index, json.dumps(mine))
    elif not (out / INDEX_FILE).exists():
        atomic_write_text(out / INDEX_FILE, json.dumps(index))
    return counts


def _rows_of(rows_files: list[str]):
    """The rows of a build: each file once (``data.valid`` may name a training file), every id
    with one audio. An id that two files give different audio raises, naming both lines."""
    from speechllm.train.data import RowIndex, TrainingDataError

    files = list(dict.fromkeys(str(Path(f).resolve()) for f in rows_files))
    try:
        return RowIndex(files)
    except TrainingDataError as e:
        raise FeatureCacheError(str(e)) from None


class FeatureCache:
    """Read side: ``encoded(ids)`` returns the ``EncodedWindows`` the encoder would have given
    (fp16 on disk, cast to the encoder dtype) and the cached transcripts."""

    def __init__(self, folder: Path, index: dict[str, Any], dtype: torch.dtype):
        self.folder = folder
        self.index = index
        self.dtype = dtype
        self._open: dict[str, Any] = {}

    @classmethod
    def open_for(cls, folder: str | Path, model) -> FeatureCache:
        folder = Path(folder)
        if not (folder / KEY_FILE).is_file():
            raise FeatureCacheError(f"{folder}: no feature cache here; build it with `speechllm cache-features`")
        saved = json.loads((folder / KEY_FILE).read_text())
        want = cache_key(model)
        if saved.get("hash") != want["hash"]:
            diff = [k for k in want if k != "hash" and saved.get(k) != want[k]]
            raise FeatureCacheError(
                f"{folder}: built for a different encoder or settings ({', '.join(diff)} differ); rebuild it with "
                "`speechllm cache-features` for this config"
            )
        return cls(folder, read_index(folder, want["hash"]), model.encoder.dtype)

    def problem(self, rid: str, audio_key: str | None = None) -> tuple[str, str] | None:
        """``(kind, message)`` when ``rid`` has no usable features (bad audio, not cached, or
        cached from other audio than ``audio_key``, the row's :func:`audio_source_key`)."""
        entry = self.index.get(rid)
        if entry is None:
            return "not_cached", f"no features in {self.folder}; re-run `speechllm cache-features`"
        if audio_key is not None and entry.get("audio_key") != audio_key:
            return "stale_features", (f"the row's audio (file, segment or contents) changed since its features "
                                      f"were cached in {self.folder}; re-run `speechllm cache-features`")
        if "error" in entry:
            return entry["error"], entry.get("message", "")
        return None

    def num_samples(self, rid: str) -> int:
        return int(self._entry(rid)["num_samples"])

    def _entry(self, rid: str) -> dict[str, Any]:
        if rid not in self.index:
            raise FeatureCacheError(f"{self.folder}: no features for id {rid!r}; re-run `speechllm cache-features` on the training files")
        return self.index[rid]

    def encoded(self, ids: list[str], device):
        from safetensors import safe_open

        from speechllm.models.encoder import EncodedWindows

        taps: list[list[torch.Tensor]] | None = None
        per_audio, valid, texts = [], [], []
        for rid in ids:
            e = self._entry(rid)
            if e["shard"] not in self._open:
                self._open[e["shard"]] = safe_open(str(self.folder / e["shard"]), framework="pt")
            f = self._open[e["shard"]]
            n_taps = int(e["taps"])  # not counted from key names: "a/" also prefixes id "a/b"'s
            if taps is None:
                taps = [[] for _ in range(n_taps)]
            for j in range(n_taps):
                taps[j].append(f.get_tensor(f"{rid}/{j}"))
            per_audio.append(e["windows"])
            valid.extend(e["valid_frames"])
            texts.append(e["transcript"])
        stacked = [_cat_padded(t).to(device, self.dtype) for t in (taps or [])]
        return EncodedWindows(taps=stacked, final=None, windows_per_audio=per_audio, valid_frames=valid), texts


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``(windows, frames, d)`` tensors along windows, zero-padding frames to the
    longest (entries cached with only their real frames differ in length)."""
    longest = max(t.shape[1] for t in tensors)
    if all(t.shape[1] == longest for t in tensors):
        return torch.cat(tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, longest - t.shape[1])) for t in tensors])
