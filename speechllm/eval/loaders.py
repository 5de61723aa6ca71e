"""Benchmark loaders: published formats read from local files into :class:`BenchItem` rows.

A benchmark is named on the command line as ``NAME:PATH`` (``mmau:data/mmau-test-mini.json``)
or as a bare ``.jsonl`` path (our own format). Nothing is downloaded: docs/evaluation.md says
where each benchmark is published and how to export it to these files.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.eval.items import (
    KIND_CHOICE,
    KIND_INSTRUCTION,
    KIND_LABEL,
    KIND_OPEN,
    KIND_REFUSAL,
    BenchItem,
    BenchmarkError,
)
from speechllm.utils.jsonl import JsonlFormatError, iter_jsonl

#: Names handled by the runner itself rather than by a file loader.
SPECIAL_BENCHMARKS = ("retention",)


@dataclass
class Benchmark:
    """Loaded items, what the report should break accuracy down by, and the scoring profile
    (:data:`speechllm.eval.scoring_profiles.PROFILES`) its answers are scored with."""

    name: str
    source: str
    items: list[BenchItem]
    breakdown_keys: list[str] = field(default_factory=list)
    scoring: str = "speechllm"


LoaderFn = Callable[[Path, "Path | None"], tuple[list[BenchItem], list[str]]]
_LOADERS: dict[str, tuple[LoaderFn, str]] = {}
#: Each benchmark's default scoring profile: the rule its authors' evaluation script applies.
DEFAULT_SCORING: dict[str, str] = {}


def loader(name: str, description: str, scoring: str = "speechllm") -> Callable[[LoaderFn], LoaderFn]:
    def deco(fn: LoaderFn) -> LoaderFn:
        _LOADERS[name] = (fn, description)
        DEFAULT_SCORING[name] = scoring
        return fn

    return deco


def known_benchmarks() -> dict[str, str]:
    """Every benchmark name with a one-line description (loaders plus special suites)."""
    out = {name: desc for name, (_, desc) in _LOADERS.items()}
    out["retention"] = "retention suite: KL-to-base, dNLL, top-1 agreement, refusal, text-path invariance"
    return dict(sorted(out.items()))


def parse_bench_spec(spec: str) -> tuple[str, str | None]:
    """``NAME:PATH`` -> (NAME, PATH); a bare ``*.jsonl`` path -> ("jsonl", path); ``NAME`` alone
    -> (NAME, None). Unknown names raise listing the known ones."""
    name, sep, path = spec.partition(":")
    if not sep:
        if spec.endswith(".jsonl") or Path(spec).is_file():
            return "jsonl", spec
        name, path = spec, None
    name = name.strip().lower()
    if name not in _LOADERS and name not in SPECIAL_BENCHMARKS:
        known = ", ".join(known_benchmarks())
        raise BenchmarkError(f"unknown benchmark {name!r} in {spec!r}; known benchmarks: {known}")
    return name, (path or None)


def load_benchmark(spec: str, *, audio_root: str | Path | None = None, scoring: str | None = None) -> Benchmark:
    """Load ``NAME:PATH`` into a :class:`Benchmark`, scored with ``scoring`` (default: the
    benchmark's official profile, :data:`DEFAULT_SCORING`). Duplicate item ids raise."""
    name, path = parse_bench_spec(spec)
    if name in SPECIAL_BENCHMARKS:
        raise BenchmarkError(f"{name!r} is a suite run by `speechllm eval`, not a file benchmark")
    if path is None:
        raise BenchmarkError(f"benchmark {name!r} needs a path: {name}:PATH")
    p = Path(path).expanduser()
    if not p.exists():
        raise BenchmarkError(f"{name}: {p} does not exist (see docs/evaluation.md for where to get it)")
    fn = _LOADERS[name][0]
    items, breakdown = fn(p, Path(audio_root).expanduser() if audio_root else None)
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise BenchmarkError(f"{name}: {p}: duplicate item id {item.id!r}")
        seen.add(item.id)
    if not items:
        raise BenchmarkError(f"{name}: {p}: no items found")
    from speechllm.eval.scoring_profiles import get_profile

    profile = get_profile(scoring or DEFAULT_SCORING[name]).name
    return Benchmark(name=name, source=str(p), items=items, breakdown_keys=breakdown, scoring=profile)


# --------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _json_list(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Rows of a JSON array file (``where`` = file#index) or of a JSONL file (file:line)."""
    if path.suffix == ".jsonl":
        try:
            return [(f"{path}:{n}", row) for n, row in iter_jsonl(path)]
        except JsonlFormatError as e:
            raise BenchmarkError(str(e)) from None
    data = _read_json(path)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BenchmarkError(f"{path}: expected a JSON array of objects")
    return [(f"{path}#{i}", row) for i, row in enumerate(data)]


def _read_table(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a CSV / TSV / JSONL / JSON file with a ``file:line`` location each."""
    if path.suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            for row in reader:
                yield f"{path}:{reader.line_num}", dict(row)
    else:
        yield from _json_list(path)


def _need(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BenchmarkError(f"{where}: field {key!r} is missing or empty")
    return str(value)


def _audio(base: Path, rel: str) -> str:
    p = Path(rel).expanduser()
    return str(p if p.is_absolute() else (base / p))


_CHOICE_RE = re.compile(r"\(([a-z])\)\s*(.*?)(?=\s*\([a-z]\)\s|\s*\([a-z]\)$|$)", re.DOTALL)


def parse_inline_choices(text: str) -> list[str]:
    """Choices written inline as ``... (a) Female (b) Male`` (SAKURA), in order."""
    found = _CHOICE_RE.findall(text)
    letters = [f[0] for f in found]
    if not found or letters != [chr(ord("a") + i) for i in range(len(found))]:
        return []
    return [c.strip() for _, c in found]


# --------------------------------------------------------------------------- our JSONL


@loader("jsonl", "our generic JSONL: one BenchItem a line (id, kind, instruction, audios, reference, ...)")
def load_jsonl(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    base = audio_root or path.resolve().parent
    try:
        rows = list(iter_jsonl(path))
    except JsonlFormatError as e:
        raise BenchmarkError(str(e)) from None
    items = [BenchItem.from_dict(row, where=f"{path}:{n}", base_dir=base) for n, row in rows]
    return items, []


@loader("builtin", "the built-in benchmark written by `speechllm eval build-builtin` (our JSONL)")
def load_builtin(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    return load_jsonl(path, audio_root)


# --------------------------------------------------------------------------- Dynamic-SUPERB

_DS_AUDIO_COLUMNS = ("file_name", "file", "audio", "audio_path", "path", "wav")
_DS_METADATA = ("metadata.jsonl", "metadata.csv", "metadata.json")
#: Audio columns of a published Dynamic-SUPERB dataset, each with the column naming its file.
_DS_HF_AUDIO = (("audio", "file"), ("audio2", "file2"), ("audio3", "file3"), ("audio4", "file4"))


def _hf_parquet_shards(folder: Path) -> list[Path]:
    """The test split's parquet shards of a Hugging Face dataset folder (``data/test-*.parquet``,
    else every ``data/*.parquet``, else ``*.parquet`` beside it)."""
    data = folder / "data"
    return (sorted(data.glob("test-*.parquet")) or sorted(data.glob("*.parquet"))
            or sorted(folder.glob("*.parquet")))


def _ds_task_sources(path: Path) -> list[tuple[str, list[Path]]]:
    """(task name, files) per task: a published dataset folder's parquet shards, or an exported
    metadata table; ``path`` is one task (folder or file) or a folder of tasks."""
    if path.is_file():
        return [(path.parent.parent.name if path.suffix == ".parquet" else path.parent.name, [path])]

    def one(folder: Path) -> list[Path]:
        shards = _hf_parquet_shards(folder)
        if shards:
            return shards
        return next(([folder / n] for n in _DS_METADATA if (folder / n).is_file()), [])

    if one(path):
        return [(path.name, one(path))]
    return [(sub.name, one(sub)) for sub in sorted(p for p in path.iterdir() if p.is_dir()) if one(sub)]


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a parquet file (``where`` = file#row), read in batches."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BenchmarkError(f"{path}: reading a published (parquet) dataset needs pyarrow: pip install pyarrow") from None
    try:
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                yield f"{path}#{n}", row
                n += 1
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise BenchmarkError(f"{path}: not a readable parquet file ({e}); a Git LFS pointer? run `git lfs pull`") from None


def _write_audio_bytes(value: Any, name: str | None, dest_dir: Path, where: str, column: str) -> str:
    """A Hugging Face ``Audio`` cell (``{"bytes": ..., "path": ...}``) as a file under ``dest_dir``
    (written once; an existing file of the same size is kept); returns its path."""
    if not isinstance(value, dict) or not value.get("bytes"):
        raise BenchmarkError(f"{where}: column {column!r}: expected embedded audio bytes ({{'bytes', 'path'}})")
    file_name = Path(name or value.get("path") or "").name
    if not file_name:
        raise BenchmarkError(f"{where}: column {column!r}: no file name (neither a file column nor the audio's path)")
    target = dest_dir / file_name
    data = value["bytes"]
    if not (target.is_file() and target.stat().st_size == len(data)):
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return str(target)


def _ds_audio_cache(audio_root: Path | None) -> Path:
    from speechllm.assets.registry import cache_dir

    return audio_root or cache_dir() / "eval_audio" / "dynamic-superb"


@loader("dynamic-superb", "Dynamic-SUPERB tasks: the published dataset folders (data/test-*.parquet, audio "
        "embedded) or exported folders (metadata + audio); one task or a folder of tasks", scoring="desta")
def load_dynamic_superb(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    tasks = _ds_task_sources(path)
    if not tasks:
        raise BenchmarkError(
            f"{path}: no Dynamic-SUPERB task found (expected a dataset folder with data/test-*.parquet, "
            f"or {' / '.join(_DS_METADATA)}, in the folder or in its sub-folders, one per task)"
        )
    items: list[BenchItem] = []
    for task, files in tasks:
        if files[0].suffix == ".parquet":
            items += _ds_parquet_items(task, files, _ds_audio_cache(audio_root) / task)
            continue
        meta = files[0]
        base = audio_root or meta.parent
        for n, (where, row) in enumerate(_read_table(meta)):
            audio_col = next((c for c in _DS_AUDIO_COLUMNS if isinstance(row.get(c), str) and row[c]), None)
            if audio_col is None:
                raise BenchmarkError(f"{where}: no audio column (one of {', '.join(_DS_AUDIO_COLUMNS)})")
            audios = [_audio(base, row[audio_col])]
            # Phase-2 tasks with two audios name the second one file2 / audio2.
            for extra in ("file2", "audio2", "file_name2"):
                if isinstance(row.get(extra), str) and row[extra]:
                    audios.append(_audio(base, row[extra]))
            label = _need(row, "label", where)
            stem = Path(row[audio_col]).stem
            items.append(BenchItem(
                id=str(row.get("id") or f"{task}/{stem}#{n}"),
                kind=KIND_LABEL,
                instruction=_need(row, "instruction", where),
                audios=audios,
                reference=label,
                category=str(row.get("task") or task),
                scorer="desta",
                metadata={"source": where},
            ))
    return items, []


def _ds_parquet_items(task: str, shards: list[Path], audio_dir: Path) -> list[BenchItem]:
    """Items of a published Dynamic-SUPERB dataset: columns ``audio`` (embedded bytes), ``file``,
    ``instruction``, ``label`` (and ``audio2``/``file2``... for tasks with several audios). The
    audio is written once under ``audio_dir`` (the predictors read files)."""
    items = []
    for shard in shards:
        for where, row in _parquet_rows(shard):
            audios = [_write_audio_bytes(row[col], row.get(name), audio_dir, where, col)
                      for col, name in _DS_HF_AUDIO if row.get(col) is not None]
            if not audios:
                raise BenchmarkError(f"{where}: no audio column (audio, audio2, ...)")
            items.append(BenchItem(
                id=f"{task}/{Path(str(row.get('file') or len(items))).stem}",
                kind=KIND_LABEL,
                instruction=_need(row, "instruction", where),
                audios=audios,
                reference=_need(row, "label", where),
                category=task,
                scorer="desta",
                metadata={"source": where, "file": row.get("file")},
            ))
    return items


# --------------------------------------------------------------------------- MMAU


@loader("mmau", "MMAU test-mini / test JSON (audio_id, question, choices, answer, task, category, ...)",
        scoring="mmau-official")
def load_mmau(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    base = audio_root or path.resolve().parent
    items = []
    for where, row in _json_list(path):
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) < 2:
            raise BenchmarkError(f"{where}: field 'choices': expected a list of at least two options")
        answer = _need(row, "answer", where)
        if answer not in choices:
            raise BenchmarkError(f"{where}: field 'answer': {answer!r} is not one of the choices")
        audio = _need(row, "audio_id", where)
        items.append(BenchItem(
            id=str(row.get("id") or Path(audio).stem),
            kind=KIND_CHOICE,
            instruction=_need(row, "question", where),
            audios=[_audio(base, audio)],
            reference=answer,
            choices=[str(c) for c in choices],
            category=str(row.get("task") or "default"),
            metadata={k: row[k] for k in ("category", "sub-category", "difficulty", "dataset", "split")
                      if k in row},
        ))
    return items, ["category", "difficulty"]


# --------------------------------------------------------------------------- Speech-IFEval


def _speech_ifeval_files(path: Path) -> list[Path]:
    """The split files under a Speech-IFEval clone, its ``data/`` folder, ``data/eval_data/``, or
    one split file."""
    from speechllm.eval.speech_ifeval import SPLITS

    if path.is_file():
        return [path]
    for folder in (path / "data" / "eval_data", path / "eval_data", path):
        found = [folder / f"{stem}.jsonl" for stem in SPLITS if (folder / f"{stem}.jsonl").is_file()]
        if found:
            return found
    return []


@loader("speech-ifeval", "Speech-IFEval's data/ folder (eval_data/<split>.jsonl + audios/): closed-ended, "
        "creative writing, chain-of-thought", scoring="speech-ifeval")
def load_speech_ifeval(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    from speechllm.eval.speech_ifeval import BASELINE_SPLIT, SPLITS

    files = _speech_ifeval_files(path)
    if not files:
        raise BenchmarkError(
            f"{path}: no Speech-IFEval split found (expected eval_data/{{{','.join(SPLITS)}}}.jsonl "
            "under the folder, its data/ folder, or a split file)")
    items: list[BenchItem] = []
    for f in files:
        stem = f.stem
        if stem == BASELINE_SPLIT:
            raise BenchmarkError(
                f"{f}: the task-level baseline (no output constraint) is scored by Speech-IFEval's "
                "GPT-4o task judge, which speechllm does not reproduce; use the three IF splits")
        if stem not in SPLITS:
            raise BenchmarkError(f"{f}: not a Speech-IFEval split (one of {', '.join(SPLITS)})")
        split = SPLITS[stem]
        # Audio paths are relative to data/audios/ (the published archive unpacks there).
        audio_base = audio_root or (f.resolve().parent.parent / "audios")
        for n, (where, row) in enumerate(_json_list(f)):
            audio = _need(row, "audio_filepath", where)
            meta = {k: row[k] for k in ("dataset", "metric", "label", "key") if row.get(k) is not None}
            meta["split"] = split
            common = dict(id=f"{split}/{row.get('id', n)}", instruction=_need(row, "instruction", where),
                          audios=[_audio(audio_base, audio)], category=split,
                          audio_text=row.get("textual_audio") or row.get("seed_transcript"), metadata=meta)
            if row.get("metric") == "cot":
                # Judged: did the answer reason step by step (Speech-IFEval's GPT-4o prompt)?
                meta["judge_protocol"] = "speech-ifeval-cot"
                items.append(BenchItem(kind=KIND_OPEN, **common))
                continue
            ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
            if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
                raise BenchmarkError(f"{where}: fields 'instruction_id_list' and 'kwargs' must be lists of equal length")
            items.append(BenchItem(kind=KIND_INSTRUCTION,
                                   constraints=[{"id": i, "kwargs": k or {}} for i, k in zip(ids, kwargs, strict=True)],
                                   **common))
    return items, ["dataset"]


# --------------------------------------------------------------------------- AIR-Bench


@loader("airbench", "AIR-Bench Chat_meta.json (open-ended, judged) or Foundation_meta.json (choices)")
def load_airbench(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    base = audio_root or path.resolve().parent
    items = []
    for where, row in _json_list(path):
        task = _need(row, "task_name", where)
        dataset = _need(row, "dataset_name", where)
        # Published layout: <root>/<task_name>_<dataset_name>/<path>
        audio = _audio(base / f"{task}_{dataset}", _need(row, "path", where))
        uid = str(row.get("uniq_id", Path(row["path"]).stem))
        question = _need(row, "question", where)
        answer = _need(row, "answer_gt", where)
        common = dict(audios=[audio], category=task,
                      metadata={"dataset_name": dataset, "source": where})
        if "choice_a" in row:
            choices = [str(row[k]) for k in ("choice_a", "choice_b", "choice_c", "choice_d") if row.get(k)]
            items.append(BenchItem(id=f"foundation-{uid}", kind=KIND_CHOICE, instruction=question,
                                   reference=answer, choices=choices, **common))
        else:
            meta = row.get("meta_info")
            items.append(BenchItem(id=f"chat-{uid}", kind=KIND_OPEN, instruction=question,
                                   reference=answer, audio_text=meta if isinstance(meta, str) else None,
                                   **common))
    return items, []


# --------------------------------------------------------------------------- VoiceBench

_VB_KIND = {
    "alpacaeval": KIND_OPEN, "alpacaeval_full": KIND_OPEN, "commoneval": KIND_OPEN,
    "wildvoice": KIND_OPEN, "sd-qa": KIND_OPEN, "ifeval": KIND_INSTRUCTION,
    "advbench": KIND_REFUSAL, "openbookqa": KIND_LABEL, "mmsu": KIND_LABEL, "bbh": KIND_LABEL,
}


@loader("voicebench", "VoiceBench subsets exported as <subset>.jsonl (audio, prompt, reference, ...)")
def load_voicebench(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
    if not files:
        raise BenchmarkError(f"{path}: no <subset>.jsonl files")
    items = []
    for f in files:
        base = audio_root or f.resolve().parent
        for where, row in _json_list(f):
            subset = str(row.get("subset") or f.stem).lower()
            kind = _VB_KIND.get(subset.split("_")[0] if subset not in _VB_KIND else subset, KIND_OPEN)
            prompt = row.get("prompt")
            audio = _need(row, "audio", where)
            rid = str(row.get("id") or row.get("key") or f"{len(items)}")
            constraints = []
            if kind == KIND_INSTRUCTION:
                ids = row.get("instruction_id_list")
                kwargs = row.get("kwargs") or [{} for _ in ids or []]
                if not isinstance(ids, list) or len(kwargs) != len(ids):
                    raise BenchmarkError(f"{where}: ifeval rows need instruction_id_list and matching kwargs")
                constraints = [{"id": i, "kwargs": k or {}} for i, k in zip(ids, kwargs, strict=True)]
            reference = row.get("reference")
            scorer = None
            if kind == KIND_LABEL:
                if reference in (None, ""):
                    raise BenchmarkError(f"{where}: field 'reference' is missing")
                scorer = "option_letter" if re.fullmatch(r"\(?[A-Za-z]\)?", str(reference).strip()) else "desta"
            items.append(BenchItem(
                id=f"{subset}/{rid}",
                kind=kind,
                instruction="",  # the request is spoken; `prompt` is its transcript
                audios=[_audio(base, audio)],
                reference=None if reference in (None, "") else str(reference),
                category=subset,
                constraints=constraints,
                scorer=scorer,
                audio_text=str(prompt) if prompt else None,
                metadata={"source": where},
            ))
    return items, []


# --------------------------------------------------------------------------- SAKURA

_SAKURA_TRACKS = ("Animal", "Emotion", "Gender", "Language")


@loader("sakura", "SAKURA data folder (<Track>/metadata.csv + <Track>/audio/), single- and multi-hop")
def load_sakura(path: Path, audio_root: Path | None) -> tuple[list[BenchItem], list[str]]:
    if path.is_file():
        tracks = [path]
    elif (path / "metadata.csv").is_file():
        tracks = [path / "metadata.csv"]
    else:
        tracks = [path / t / "metadata.csv" for t in _SAKURA_TRACKS if (path / t / "metadata.csv").is_file()]
    if not tracks:
        raise BenchmarkError(f"{path}: no SAKURA track found (expected <Track>/metadata.csv)")
    items = []
    for meta in tracks:
        track = meta.parent.name.lower()
        audio_dir = (audio_root / meta.parent.name / "audio") if audio_root else meta.parent / "audio"
        for where, row in _read_table(meta):
            file = _need(row, "file", where)
            for hop in ("single", "multi"):
                instruction = _need(row, f"{hop}_instruction", where)
                answer = _need(row, f"{hop}_answer", where)
                choices = parse_inline_choices(instruction)
                if not choices:
                    raise BenchmarkError(f"{where}: {hop}_instruction has no '(a) ... (b) ...' options")
                picked = parse_inline_choices(answer)
                answer_text = picked[0] if picked else re.sub(r"^\([a-z]\)\s*", "", answer).strip()
                if answer_text not in choices:
                    raise BenchmarkError(f"{where}: {hop}_answer {answer!r} is not one of the options")
                items.append(BenchItem(
                    id=f"{track}/{Path(file).stem}/{hop}",
                    kind=KIND_CHOICE,
                    instruction=instruction,
                    audios=[str(audio_dir / file)],
                    reference=answer_text,
                    choices=choices,
                    category=f"{track}-{hop}",
                    metadata={"choices_in_instruction": True, "attribute_label": row.get("attribute_label"),
                              "hop": hop, "track": track},
                ))
    return items, ["hop"]
