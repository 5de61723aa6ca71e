"""``speechllm study forgetting``: learning against forgetting for every control, one command.

A grid of cells (target source x update scope x control, :func:`build_grid`), each trained with
the recipe's settings for ``steps`` steps per seed, then measured:

learning    ``acc_audio``: share of held-out utterances whose answer, through the audio, states the
            labelled gender (first gender word); ``target_loss``: mean CE on the held-out rows'
            targets of the cell's own source
forgetting  ``kl_to_base`` and ``delta_nll``: teacher-forced on the base's greedy answers to held-out
            text prompts (:func:`speechllm.eval.retention.teacher_forced_metrics`); ``if_rate``:
            text-only instructions checked by the IFEval-style checkers; ``refusal_rate`` on harmful
            requests; ``gap``: accuracy reading the seed description as text minus through the audio

What every cell shares is made once under ``OUT/shared`` (corpus, targets of each source, replay
rows, the base's answers); each finished cell writes ``OUT/cells/<cell>/seed<k>/result.json`` and
is not rerun; changed settings are refused. ``OUT/table.md``, ``table.json``, ``table.csv`` and
``scatter.png`` are rewritten after every cell (mean and standard deviation over seeds), and
``claims.md``: the seed papers' claims checked seed by seed (:mod:`speechllm.study.claims`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.errors import ConfigError, SpeechLLMError
from speechllm.study.targets import QUESTIONS, TARGET_SOURCES, stated_gender

log = logging.getLogger(__name__)

# Replay instructions (none is a held-out retention prompt): sampled self-output replay answers
# each 4 times at temperature 1.
REPLAY_PROMPTS = (
    "Name three animals that live in the ocean.", "How do I boil an egg?", "What is a verb?",
    "Suggest a name for a pet goldfish.", "Why do leaves change colour?", "What is 9 plus 14?",
    "Describe a sunset in one sentence.", "List two uses of a paperclip.", "What does a thermometer measure?",
    "Give a synonym for happy.", "What is the opposite of cold?", "How many days are in a leap year?",
    "Write a short greeting for a birthday card.", "What is photosynthesis?", "Name a famous painter.",
    "What is the plural of mouse?",
)

# Text-only instruction following (IFEval-style checkers of speechllm.eval.constraints).
IF_PROMPTS = (
    ("Write one sentence about the sea, all in lowercase letters.", "change_case:english_lowercase", {}),
    ("Name three fruits as a markdown bullet list with exactly 3 bullets.", "detectable_format:number_bullet_lists",
     {"num_bullets": 3}),
    ("Describe a cat in one sentence without using any commas.", "punctuation:no_comma", {}),
    ("In fewer than 20 words: why is the sky blue?", "length_constraints:number_words",
     {"num_words": 20, "relation": "less than"}),
    ("Write a short greeting and wrap your whole answer in double quotation marks.", "startend:quotation", {}),
    ("Suggest a title for a story about a dog, wrapped in double angular brackets like <<title>>.",
     "detectable_format:title", {}),
    ("Write a sentence about winter IN ALL CAPITAL LETTERS.", "change_case:english_capital", {}),
    ("Say hello and end your answer with the exact phrase 'Any other questions?'", "startend:end_checker",
     {"end_phrase": "Any other questions?"}),
)

# Update scopes: model.* overrides (docs/forgetting.md).
SCOPES: dict[str, dict[str, Any]] = {
    "adapter": {},
    "lora": {"lora.enabled": True, "lora.r": 8, "lora.alpha": 16},
    "lora-r2": {"lora.enabled": True, "lora.r": 2, "lora.alpha": 4},
    "lora-r32": {"lora.enabled": True, "lora.r": 32, "lora.alpha": 64},
    "dora": {"lora.enabled": True, "lora.r": 8, "lora.alpha": 16, "lora.method": "dora"},
    "ia3": {"lora.enabled": True, "lora.method": "ia3", "lora.target_modules": ["k_proj", "v_proj", "down_proj"]},
    "layers": {"llm_train.last_layers": 2},
    "norms": {"llm_train.patterns": [r"norm\.weight$"]},
    # One pattern: with tied input/output embeddings (SmolLM2) there is no lm_head parameter, and a
    # pattern that matches nothing is an error.
    "embeddings": {"llm_train.patterns": ["embed_tokens|lm_head"]},
    # 16 virtual tokens before every input, started from a task sentence's embeddings (Lester et
    # al.: a vocabulary start beats a random one); every measure reads them (PromptedLM).
    "prompt": {"prompt_tuning.num_tokens": 16, "prompt_tuning.init_text": "Answer the question about the audio."},
    # 16 key/value positions per layer, started from the LLM's own keys/values over that sentence.
    "prefix": {"prefix_tuning.num_tokens": 16, "prefix_tuning.init_text": "Answer the question about the audio."},
}

# Controls: train.* / data.* overrides; "replay:<kind>" names the shared replay file.
CONTROLS: dict[str, dict[str, Any]] = {
    "plain": {},
    "replay5-sampled": {"data.replay": "replay:sampled", "data.replay_ratio": 0.05},
    "replay25-sampled": {"data.replay": "replay:sampled", "data.replay_ratio": 0.25},
    "replay5-pseudo": {"data.replay": "replay:pseudo", "data.replay_ratio": 0.05},
    "replay25-pseudo": {"data.replay": "replay:pseudo", "data.replay_ratio": 0.25},
    "stm2.5": {"train.stm_tau": 2.5},
    "l2sp1": {"train.l2sp_alpha": 1.0},
    "l2sp10": {"train.l2sp_alpha": 10.0},
    "ewc1": {"train.ewc_lambda": 1.0},
    "ewc10": {"train.ewc_lambda": 10.0},
    "kl1+replay25": {"data.replay": "replay:sampled", "data.replay_ratio": 0.25, "train.replay_kl_weight": 1.0},
}
MERGE_LAMBDAS = (0.25, 0.5, 0.75)


class StudyError(SpeechLLMError):
    """The study cannot run as asked (changed settings in an existing folder, unknown cells)."""


@dataclass(frozen=True)
class Cell:
    """One grid point: a target source, an update scope and a control (plus merge λs to measure)."""

    source: str
    scope: str
    control: str
    merge: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.source}.{self.scope}.{self.control}"


def build_grid(name: str) -> list[Cell]:
    """The cells of grid ``name``, one factor at a time around ``gold.lora.plain`` (the cells a
    claim of docs/forgetting.md compares come first, so that a shortened run answers them first):

    ``full``     33 cells. Sources: each of the five on lora and on adapter (the DeSTA2
                 setting is self.adapter); scopes on gold: layers, dora, ia3, norms,
                 embeddings, prompt, prefix, lora-r2, lora-r32, plus self.layers; controls on
                 gold.lora: replay 5%/25% sampled and pseudo, STM (also on self.lora), L2-SP
                 α 1 and 10, EWC λ 1 and 10 (the 10s also on gold.layers, their full-fine-tuning
                 setting), KL-to-base with 25% replay; merge λ 0.25/0.5/0.75 measured on gold.lora, gold.layers and self.lora
                 (no extra training)
    ``reduced``  13 cells behind the claims (no paraphrase: SmolLM2-135M copies the gold answer; no
                 pseudo replay), merge λ 0.5 on gold lora and layers
    ``ci``       2 cells (self.adapter.plain, gold.lora.plain with a merge λ), for the test
    """
    merge = MERGE_LAMBDAS
    if name == "ci":
        return [Cell("self", "adapter", "plain"), Cell("gold", "lora", "plain", (0.5,))]
    if name == "reduced":  # in order of the claims: what a shortened run measures first
        half = (0.5,)
        cells = [Cell("gold", "lora", "plain", half), Cell("self", "lora", "plain"),
                 Cell("gold", "layers", "plain", half)]
        cells += [Cell("gold", "lora", c) for c in ("replay5-sampled", "stm2.5")] + [Cell("self", "lora", "stm2.5")]
        cells += [Cell("gold", "lora", c) for c in ("l2sp10", "ewc10", "kl1+replay25", "replay25-sampled")]
        cells += [Cell("gold", "adapter", "plain"), Cell("verified", "lora", "plain"),
                  Cell("minchange", "lora", "plain")]
        return cells
    if name == "full":
        cells = [Cell("gold", "lora", "plain", merge), Cell("self", "lora", "plain", merge),
                 Cell("gold", "layers", "plain", merge), Cell("gold", "lora", "replay5-sampled"),
                 Cell("gold", "lora", "stm2.5"), Cell("self", "lora", "stm2.5"), Cell("gold", "lora", "l2sp10"),
                 Cell("gold", "lora", "ewc10"), Cell("gold", "lora", "kl1+replay25"),
                 Cell("gold", "lora", "replay25-sampled"), Cell("gold", "lora", "l2sp1"), Cell("gold", "lora", "ewc1"),
                 Cell("gold", "adapter", "plain"),
                 Cell("gold", "prompt", "plain"), Cell("gold", "prefix", "plain"),
                 Cell("self", "adapter", "plain"), Cell("verified", "lora", "plain"),
                 Cell("minchange", "lora", "plain"), Cell("paraphrase", "lora", "plain"),
                 Cell("self", "layers", "plain")]
        cells += [Cell("gold", scope, "plain") for scope in ("dora", "ia3", "norms", "embeddings", "lora-r2",
                                                              "lora-r32")]
        cells += [Cell("gold", "lora", c) for c in ("replay5-pseudo", "replay25-pseudo")]
        cells += [Cell("gold", "layers", c) for c in ("l2sp10", "ewc10")]
        cells += [Cell(s, "adapter", "plain") for s in ("verified", "minchange", "paraphrase")]
        return cells
    raise StudyError(f"--grid {name!r}: unknown; known: full, reduced, ci")


def parse_cells(spec: str) -> list[Cell]:
    """Cells named ``source.scope.control`` (comma-separated), checked against the known parts."""
    cells = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        bits = part.split(".")
        if len(bits) != 3 or bits[0] not in TARGET_SOURCES or bits[1] not in SCOPES or bits[2] not in CONTROLS:
            raise StudyError(f"--cells {part!r}: expected source.scope.control with source in {TARGET_SOURCES}, "
                             f"scope in {tuple(SCOPES)}, control in {tuple(CONTROLS)}")
        cells.append(Cell(*bits))
    return cells


@dataclass
class StudySettings:
    """What every cell shares; an output folder holds one set of them (others are refused)."""

    recipe: dict[str, Any]  # the recipe file's SHA-256 and the overrides: what the user chose
    steps: int = 60
    num: int = 240
    eval_rows: int = 40
    retention_prompts: int = 16
    harmful_prompts: int = 8
    max_new_tokens: int = 32
    data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warm_steps: int = 0

    def digest(self) -> str:
        # warm_steps 0 (no warm start) is left out: folders made before the field existed continue.
        blob = json.dumps({k: v for k, v in self.__dict__.items() if k != "warm_steps" or v}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- shared stage


def _question_for(row_id: str) -> str:
    return QUESTIONS[int(hashlib.sha256(row_id.encode()).hexdigest(), 16) % len(QUESTIONS)]


def _speech_rows(path: Path, root: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if str(r.get("attributes", {}).get("gender", "")).lower() not in ("male", "female"):
            continue  # the learned attribute is gender: rows without it (non-speech) are not used
        audio = Path(r["audio"])
        r["audio"] = str(audio if audio.is_absolute() else root / audio)
        r["messages"] = [{"role": "user", "content": "<|AUDIO|>\n" + _question_for(r["id"])}]
        rows.append(r)
    return rows


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    from speechllm.utils.fs import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def prepare_shared(out: Path, settings: StudySettings, cfg) -> dict[str, Any]:
    """Corpus, the five target sources (train and held-out), replay rows and the base's measures,
    made once in ``out/shared`` (each file skipped when present)."""
    import subprocess
    import sys

    from speechllm.study import targets as tg

    shared = out / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    if settings.data:
        corpus = Path(settings.data)
    else:
        corpus = shared / "synth"
        if not (corpus / "all.jsonl").is_file():
            if corpus.exists():
                shutil.rmtree(corpus)
            subprocess.run([sys.executable, "-m", "speechllm", "synth", str(corpus), "--num", str(settings.num),
                            "--jobs", "1", "--no-progress"], check=True)
    train = _speech_rows(corpus / "train.jsonl", corpus)
    held = [r for split in ("test", "dev") if (corpus / f"{split}.jsonl").is_file()
            for r in _speech_rows(corpus / f"{split}.jsonl", corpus)][: settings.eval_rows]
    if not train or not held:
        raise StudyError(f"{corpus}: needs train.jsonl and test.jsonl/dev.jsonl rows with a gender label")
    files = {s: {"train": shared / "targets" / f"{s}.train.jsonl", "held": shared / "targets" / f"{s}.held.jsonl"}
             for s in TARGET_SOURCES}
    replay = {"sampled": shared / "replay.sampled.jsonl", "pseudo": shared / "replay.pseudo.jsonl"}
    need = [f[split] for s, f in files.items() for split in f if s != "paraphrase" and not f[split].is_file()] + [
        p for p in replay.values() if not p.is_file()]
    need += [files["paraphrase"][split] for split in files["paraphrase"]
             if not (shared / f"paraphrase.{split}.work.jsonl").is_file()]
    backend = None
    if need:
        from speechllm.generate.backend import load_backend

        backend = load_backend("hf", cfg.model.llm, dtype="fp32", device="cpu",
                               chat_template=cfg.model.chat_template, revision=cfg.model.llm_revision)
    for split, rows in (("train", train), ("held", held)):
        if all(files[s][split].is_file() for s in TARGET_SOURCES):
            continue
        cached = {r["id"]: r["response"] for r in _read_jsonl(files["self"][split])} if files["self"][split].is_file() \
            else {}
        if all(r["id"] in cached for r in rows):  # the LLM's raw answers: the derived sources are remade from them
            own = [cached[r["id"]] for r in rows]
        else:
            own = tg.self_answers(backend, rows, cfg.model, max_new_tokens=64)
        para_cfg = copy.deepcopy(cfg)
        para_cfg.sampling.max_new_tokens = 64
        para = tg.paraphrases(backend, rows, [_question_for(r["id"]) for r in rows],
                              shared / f"paraphrase.{split}.work.jsonl", para_cfg)
        kept = 0
        out_rows: dict[str, list[dict[str, Any]]] = {s: [] for s in TARGET_SOURCES}
        for r, ans, par in zip(rows, own, para, strict=True):
            v, ok = tg.verified(ans, r)
            kept += ok
            for s, resp in (("gold", tg.gold_answer(r)), ("self", ans), ("paraphrase", par),
                            ("minchange", tg.minimum_change(ans, r)), ("verified", v)):
                out_rows[s].append({**r, "response": resp, "target_source": s})
        for s in TARGET_SOURCES:
            _write_jsonl(files[s][split], out_rows[s])
        log.info("targets %s: verifier kept %d of %d self answers", split, kept, len(rows))
    _make_replay(backend, replay, cfg)
    return {"train_rows": len(train), "held_rows": len(held), "targets": files, "replay": replay,
            "held": held}


def _make_replay(backend, replay: dict[str, Path], cfg) -> None:
    """Sampled self-output (4 draws per REPLAY_PROMPTS instruction at T=1) and pseudo (Magpie-style)
    replay rows, through ``generate-replay``."""
    from speechllm.generate.replay import generate_replay

    rcfg = copy.deepcopy(cfg)
    rcfg.sampling.temperature, rcfg.sampling.top_p, rcfg.sampling.top_k = 1.0, 1.0, 0
    rcfg.sampling.max_new_tokens = 48
    for kind, path in replay.items():
        if path.is_file():
            continue
        work = path.with_suffix(".work.jsonl")
        if kind == "sampled":
            items = [{"id": f"replay{i}-{k}", "instruction": p} for i, p in enumerate(REPLAY_PROMPTS) for k in range(4)]
            generate_replay(work, "self-output", rcfg, instructions=items, backend=backend, progress=False)
        else:
            generate_replay(work, "pseudo", rcfg, num=64, backend=backend, progress=False)
        shutil.copyfile(work, path)


# ---------------------------------------------------------------------------- warm start


WARM_CELL = Cell("gold", "adapter", "plain")


def warm_adapter_file(out: Path) -> Path:
    return out / "shared" / "warm" / "adapter.safetensors"


def prepare_warm(out: Path, settings: StudySettings, cfg, shared: dict[str, Any]) -> None:
    """The shared warm start (``--warm-steps W``): the adapter trained alone on the gold targets for
    W steps (seed 0, the LLM frozen: no forgetting), once; every cell starts from it. Without it the
    few steps a cell can afford do not tie the answers to the audio (held-out accuracy stays at the
    majority rate), so learning could only be read from the target loss."""
    path = warm_adapter_file(out)
    if not settings.warm_steps or path.is_file():
        return
    from safetensors.torch import save_file

    from speechllm.train import Trainer

    run_dir = path.parent / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    warm_settings = copy.copy(settings)
    warm_settings.steps = settings.warm_steps
    wcfg = cell_config(cfg, WARM_CELL, 0, shared, run_dir, warm_settings, out / "shared" / "features")
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = Trainer(wcfg)
    trainer.run()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    valid = _read_jsonl(run_dir / "valid.jsonl")[-1]
    # Where every cell starts: its held-out accuracy through the audio (the table's "warm start" row).
    start = Measures(cfg, settings, shared["held"], trainer.model.base_causal_lm().dtype).audio_side(
        trainer.model.eval())
    llm = trainer.llm_trainable()
    weights = {n: p.detach().float().contiguous() for n, p in trainer.trainable_named.items() if n not in llm}
    from speechllm.utils.fs import atomic_write_text

    # warm.json first: the adapter file is what marks the warm start done.
    atomic_write_text(path.with_name("warm.json"), json.dumps(
        {"steps": settings.warm_steps, "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu, 1),
         "tensors": len(weights), "target_loss": valid["valid_loss"], **start}, indent=2) + "\n")
    tmp = path.with_suffix(".tmp")
    save_file(weights, str(tmp))
    tmp.replace(path)
    shutil.rmtree(run_dir)
    log.info("warm start: the adapter trained alone for %d steps -> %s", settings.warm_steps, path)


def load_warm(trainer, out: Path) -> None:
    """Start the trainer's adapter from the shared warm start (every tensor must match by name)."""
    import torch
    from safetensors.torch import load_file

    warm = load_file(str(warm_adapter_file(out)))
    named = trainer.trainable_named
    missing = [n for n in warm if n not in named] + [n for n in named if n not in warm and n not in
                                                      trainer.llm_trainable()]
    if missing:
        raise StudyError(f"{warm_adapter_file(out)}: the warm start does not fit this cell's adapter "
                         f"(e.g. {missing[0]}); delete the folder's shared/warm to remake it")
    with torch.no_grad():
        for n, t in warm.items():
            named[n].copy_(t.to(named[n].dtype))


# ---------------------------------------------------------------------------- one cell


def _set(cfg, dotted: str, value: Any) -> None:
    obj = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    setattr(obj, parts[-1], copy.deepcopy(value))


def cell_config(base_cfg, cell: Cell, seed: int, shared: dict[str, Any], run_dir: Path, settings: StudySettings,
                feature_cache: Path):
    """The RunConfig of one cell and seed: the recipe plus the cell's scope and control."""
    cfg = copy.deepcopy(base_cfg)
    for k, v in SCOPES[cell.scope].items():
        _set(cfg.model, k, v)
    for k, v in CONTROLS[cell.control].items():
        if isinstance(v, str) and v.startswith("replay:"):
            v = [str(shared["replay"][v.split(":", 1)[1]])]
        _set(cfg, k, v)
    cfg.data.train = [str(shared["targets"][cell.source]["train"])]
    cfg.data.train_weights = None
    cfg.data.valid = str(shared["targets"][cell.source]["held"])
    cfg.data.feature_cache = str(feature_cache)
    t = cfg.train
    t.output_dir = str(run_dir)
    t.seed = seed
    t.max_steps = settings.steps
    # A cell's warm-up is at most a tenth of its steps: the recipe's (sized for hundreds of steps)
    # would spend most of a short cell below the learning rate.
    t.warmup_steps = min(t.warmup_steps, max(1, settings.steps // 10))
    t.save_every, t.eval_every, t.num_sample_generations, t.keep_last = 0, 0, 0, 1
    t.init_from = None
    return cfg


class PromptedLM:
    """A SpeechLLM's text path as a Hugging Face causal LM, for the text-side measures: its LLM
    (with whatever LoRA/IA3/trained weights it has) reading the prompt-tuning virtual tokens where
    the model's own input path puts them (the first ``num_tokens`` real positions of each row,
    :meth:`~speechllm.models.speech_llm.SpeechLLM.prompt_mask`) and the prefix-tuning KV cache
    (:mod:`speechllm.models.prefix_tuning`, as :meth:`SpeechLLM.llm_inputs` fills it).
    ``__call__(input_ids=...)`` returns the logits of the given tokens only; ``generate`` returns
    prompt + continuation ids, as the bare LLM's does with token ids."""

    def __init__(self, model) -> None:
        self.model = model
        self.llm = model.llm
        self.n = model.config.prompt_tuning.num_tokens if model.prompt_embeddings is not None else 0
        self.generation_config = model.base_causal_lm().generation_config

    def _inputs(self, input_ids, attention_mask=None) -> dict[str, Any]:
        import torch

        from speechllm.llm_runtime import positions_of
        from speechllm.models.prefix_tuning import with_prefix

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        b, ids, mask = input_ids.shape[0], input_ids, attention_mask
        if self.n:
            pad = torch.full((b, self.n), self.model.pad_id, dtype=input_ids.dtype)
            # Left padding stays left: the virtual tokens go right after each row's padding.
            ids = torch.cat([pad, input_ids], 1)
            mask = torch.cat([torch.zeros((b, self.n), dtype=attention_mask.dtype), attention_mask], 1)
            for i, w in enumerate((attention_mask.cumsum(1) == 0).sum(1).tolist()):  # each row's padding
                mask[i, w: w + self.n] = 1
        embeds = self.llm.get_input_embeddings()(ids)
        if self.n:
            where = self.model.prompt_mask(mask)
            rows = self.model.prompt_embeddings.to(embeds.dtype).expand(b, -1, -1)
            embeds = embeds.masked_scatter(where.unsqueeze(-1), rows)
        inputs = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions_of(mask)}
        if self.model.prefix_kv is not None:
            inputs = with_prefix(inputs, self.model.prefix_kv, self.model.base_causal_lm())
        return inputs

    def __call__(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        logits = self.llm(**self._inputs(input_ids, attention_mask), use_cache=False).logits
        return SimpleNamespace(logits=logits[:, self.n:])

    def generate(self, input_ids, attention_mask=None, **kwargs):
        import torch

        from speechllm.models.prefix_tuning import for_generate

        inputs = self._inputs(input_ids, attention_mask)
        if self.model.prefix_kv is not None:
            inputs = for_generate(inputs, self.model.prefix_kv)
        inputs.pop("position_ids", None)  # generate counts them from the mask
        out = self.llm.generate(**inputs, **kwargs)
        return torch.cat([input_ids, out], 1)  # with embeddings generate returns only the new tokens


def text_lm(model):
    """What the text-side measures call: the LLM itself, or :class:`PromptedLM` with prompt or
    prefix tuning."""
    return PromptedLM(model) if model.prompt_embeddings is not None or model.prefix_kv is not None else model.llm


class Measures:
    """The base LLM's side of every measure, computed once per study process."""

    def __init__(self, cfg, settings: StudySettings, held: list[dict[str, Any]], dtype):
        from speechllm.eval.retention import (
            base_answers,
            load_harmful_prompts,
            load_retention_prompts,
        )
        from speechllm.llm_runtime import load_causal_lm

        loaded = load_causal_lm(cfg.model.llm, revision=cfg.model.llm_revision, dtype=dtype)
        self.base, self.tokenizer = loaded.model, loaded.tokenizer
        self.max_new_tokens = settings.max_new_tokens
        prompts = load_retention_prompts()[: settings.retention_prompts]
        self.prompt_ids, self.answers = base_answers(self.base, self.tokenizer, prompts,
                                                     max_new_tokens=settings.max_new_tokens)
        self.harmful = load_harmful_prompts()[: settings.harmful_prompts]
        self.held = held
        self.base_text: dict[str, Any] | None = None

    def text_side(self, llm) -> dict[str, Any]:
        """KL-to-base, ΔNLL, IF rate and refusal rate of ``llm`` (the base itself gives the base row;
        a SpeechLLM's text path: :func:`text_lm`)."""
        from speechllm.eval.constraints import check_constraint
        from speechllm.eval.predictors import generate_chat
        from speechllm.eval.retention import refusal_rate, teacher_forced_metrics

        m = teacher_forced_metrics(self.base, llm, self.prompt_ids, self.answers)
        chats = [[{"role": "user", "content": p}] for p, _, _ in IF_PROMPTS]
        replies = generate_chat(llm, self.tokenizer, chats, 64)
        follows = [bool(check_constraint(cid, r, kw)) for (_, cid, kw), r in zip(IF_PROMPTS, replies, strict=True)]
        refusal = refusal_rate(llm, self.tokenizer, self.harmful, max_new_tokens=self.max_new_tokens,
                               batch_size=len(self.harmful))
        return {"kl_to_base": m["kl_to_base"], "delta_nll": m["delta_nll"], "top1_agreement": m["top1_agreement"],
                "if_rate": sum(follows) / len(follows), "refusal_rate": refusal["refusal_rate"]}

    def base_side(self) -> dict[str, Any]:
        """The base's own text-side row (measured once per process)."""
        if self.base_text is None:
            self.base_text = self.text_side(self.base)
        return self.base_text

    def audio_side(self, model) -> dict[str, Any]:
        """Held-out gender accuracy through the audio and reading the seed description (all
        held-out rows in one generation batch each: fewer decode steps than batches of 8)."""
        from speechllm.audio.io import load_audio
        from speechllm.describe.renderer import render_description
        from speechllm.models.chat_layout import substitute_audio_text

        manifest = model.config.transcript_source == "manifest"
        rows = self.held
        waves = [[load_audio(r["audio"])] for r in rows]
        trans = [[r.get("transcript")] for r in rows] if manifest else None
        said = model.generate([r["messages"] for r in rows], waves, trans, max_new_tokens=self.max_new_tokens)
        texts = [substitute_audio_text(r["messages"], [render_description(r)], model.config) for r in rows]
        read = model.generate(texts, max_new_tokens=self.max_new_tokens)
        hits_audio = hits_text = 0
        for r, a, t in zip(rows, said, read, strict=True):
            label = r["attributes"]["gender"].lower()
            hits_audio += stated_gender(a) == label
            hits_text += stated_gender(t) == label
        n = len(rows)
        return {"acc_audio": hits_audio / n, "acc_text": hits_text / n, "gap": (hits_text - hits_audio) / n}


def interpolate_llm(trainer, lam: float, trained: dict[str, Any]) -> None:
    """Set the trained LLM weights to θ0 + λ(θ − θ0) (``trained``: their θ). LoRA: B scaled by λ,
    A kept (exact for B·A); every other weight (layers, norms, IA3 vectors, DoRA magnitudes)
    interpolated toward its start value (exact, but for DoRA's normalisation)."""
    import torch

    anchors = trainer.forgetting.anchors
    with torch.no_grad():
        for name, p in trainer.llm_trainable().items():
            theta = trained[name]
            if ".lora_A" in name:
                p.copy_(theta)
            else:
                p.copy_((anchors[name] + lam * (theta.float() - anchors[name])).to(p.dtype))


def run_cell(base_cfg, cell: Cell, seed: int, shared: dict[str, Any], settings: StudySettings, out: Path,
             measures_of) -> dict[str, Any]:
    """Train one cell for one seed and measure it (and its merge λs); returns the result record."""
    import torch

    from speechllm.train import Trainer

    run_dir = out / "cells" / cell.name / f"seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished run: start it again
    cfg = cell_config(base_cfg, cell, seed, shared, run_dir / "run", settings, out / "shared" / "features")
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = Trainer(cfg)
    if settings.warm_steps:
        load_warm(trainer, out)
    result = trainer.run()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    valid = _read_jsonl(run_dir / "run" / "valid.jsonl")[-1]
    measures = measures_of(trainer.model)
    t1, c1 = time.perf_counter(), time.process_time()
    model = trainer.model.eval()
    # With no LLM weight trained the text path is the base LLM itself (same weights, same dtype):
    # its text-side measures are the base row's, exactly, and are not recomputed.
    text_frozen = not trainer.llm_trainable()
    rows = []
    points = [1.0] + [lam for lam in cell.merge if lam != 1.0]
    trained = {n: p.detach().clone() for n, p in trainer.llm_trainable().items()}
    for lam in points:
        if lam != 1.0:
            interpolate_llm(trainer, lam, trained)
        rec = {"cell": cell.name, "source": cell.source, "scope": cell.scope, "control": cell.control,
               "merge": lam, "seed": seed}
        rec["target_loss"] = valid["valid_loss"] if lam == 1.0 else trainer.validate()["valid_loss"]
        rec.update(measures.audio_side(model))
        rec.update(measures.base_side() if text_frozen else measures.text_side(text_lm(model)))
        rows.append(rec)
    eval_s, eval_cpu = time.perf_counter() - t1, time.process_time() - c1
    for rec in rows:
        rec.update(steps=result.step, train_s=round(train_s, 1), eval_s=round(eval_s, 1),
                   train_cpu_s=round(train_cpu, 1), eval_cpu_s=round(eval_cpu, 1),
                   final_ce=result.losses[-1].get("loss_ce") if result.losses else None,
                   stm_masked=trainer.forgetting.stm_masked_share,
                   trained_llm_params=int(sum(p.numel() for p in trainer.llm_trainable().values())))
    del trainer, model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    # Only the measures are kept: the checkpoints of a few hundred cells would fill the disk.
    for sub in (run_dir / "run").iterdir():
        if sub.is_dir() and sub.name != "plots":
            shutil.rmtree(sub)
    return {"settings": settings.digest(), "cell": cell.name, "seed": seed, "rows": rows}


# ---------------------------------------------------------------------------- the study


METRICS = ("acc_audio", "target_loss", "kl_to_base", "delta_nll", "if_rate", "refusal_rate", "gap")


def run_study(recipe: str | Path, out: str | Path, *, grid: str = "full", cells: str | None = None,
              seeds: int = 3, steps: int = 30, num: int = 200, eval_rows: int = 24, data: str | None = None,
              overrides: Sequence[str] = (), max_cells: int | None = None,
              max_new_tokens: int = 24, workers: int = 1, worker: int | None = None,
              warm_steps: int = 60) -> dict[str, Any]:
    """Run (or continue) the study into ``out``; see the module docstring. Returns the table.

    ``workers`` > 1 runs the cells in that many child processes (``speechllm study forgetting
    ... --worker k``; each claims the next unfinished cell and seed with an exclusive file, loads
    the base measures once and runs ``cores // workers`` threads); the shared stage and the warm
    start run first, in this process, with its own thread count. ``worker`` is a child's
    index (it writes no table; the parent does when all are done). ``warm_steps`` > 0 starts every
    cell from one adapter trained alone on the gold targets for that many steps
    (:func:`prepare_warm`)."""
    from speechllm.config import RunConfig, load_config

    out = Path(out)
    cfg = load_config(RunConfig, recipe, list(overrides))
    chosen = parse_cells(cells) if cells else build_grid(grid)
    from speechllm.utils.fs import sha256_file

    # The recipe as written, not as resolved: a speechllm update that adds config fields (with
    # their defaults) does not make a half-finished study refuse to continue.
    recipe_id = {"file": str(recipe), "sha256": sha256_file(recipe), "overrides": list(overrides)}
    settings = StudySettings(recipe=recipe_id, steps=steps, num=num, eval_rows=eval_rows, data=data,
                             max_new_tokens=max_new_tokens, warm_steps=warm_steps)
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "study.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text(encoding="utf-8"))
        if old.get("digest") != settings.digest():
            raise StudyError(f"{stamp}: this folder holds a study with other settings (recipe, --steps, --num, "
                             "--eval-rows, --data or overrides); use another --out, or the same settings to continue")
    else:
        from speechllm.utils.fs import atomic_write_text

        atomic_write_text(stamp, json.dumps({"digest": settings.digest(), "settings": settings.__dict__},
                                            indent=2, default=str) + "\n")
    t_shared = time.perf_counter()
    shared = prepare_shared(out, settings, cfg)
    prepare_warm(out, settings, cfg, shared)
    shared_s = time.perf_counter() - t_shared
    if workers > 1 and worker is None:
        _clear_failures(out)
        _run_workers(out, workers, chosen, recipe=recipe, grid=grid, cells=cells, seeds=seeds, steps=steps, num=num,
                     eval_rows=eval_rows, data=data, overrides=overrides, max_new_tokens=max_new_tokens,
                     warm_steps=warm_steps)
        table = write_table(out, chosen, seeds)
        table["shared_seconds"] = round(shared_s, 1)
        return table
    state: dict[str, Any] = {}

    def measures_of(model):
        if "m" not in state:
            state["m"] = Measures(cfg, settings, shared["held"], model.base_causal_lm().dtype)
            base_file = out / "shared" / "base.json"
            if not base_file.is_file():
                base = {"cell": "base", "source": "-", "scope": "none", "control": "-", "merge": 0.0}
                base.update(state["m"].base_side())
                _write_jsonl(base_file, [base])
        return state["m"]

    done_now = 0
    if worker is None:
        _clear_failures(out)  # a new run tries failed cells again (a child keeps its parent's list)
    for seed in range(seeds):
        for cell in chosen:
            path = out / "cells" / cell.name / f"seed{seed}" / "result.json"
            if path.is_file() or path.with_name(FAILED).is_file():
                continue  # finished (resumable), or failed in this run
            if max_cells is not None and done_now >= max_cells:
                break
            if worker is not None and not _claim(path.parent.parent / f"seed{seed}.claim"):
                continue  # another worker has it
            log.info("cell %s seed %d", cell.name, seed)
            from speechllm.utils.fs import atomic_write_text

            done_now += 1
            try:
                record = run_cell(cfg, cell, seed, shared, settings, out, measures_of)
            except SpeechLLMError as e:  # this cell cannot run as configured: the others still can
                log.error("cell %s seed %d failed: %s", cell.name, seed, e)
                atomic_write_text(path.with_name(FAILED), json.dumps(
                    {"cell": cell.name, "seed": seed, "error": str(e)}) + "\n")
                continue
            atomic_write_text(path, json.dumps(record, indent=2) + "\n")
            if worker is None:
                write_table(out, chosen, seeds)
    if worker is not None:
        return {"base": None, "entries": []}
    table = write_table(out, chosen, seeds)
    table["shared_seconds"] = round(shared_s, 1)
    return table


def _claim(path: Path) -> bool:
    """Take ``path`` (create it exclusively); False when another worker already has."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# A cell that cannot run (its error is in this file beside where result.json would be).
FAILED = "failed.json"
# Cells one child process runs before it exits and the parent starts a fresh one: a process's
# memory grew by ~0.3 GB per cell (2 GB to 6 GB over 13 cells), which the grid's 50 cells per
# worker would take past a small machine's memory.
CELLS_PER_PROCESS = 6


def _clear_failures(out: Path) -> None:
    for failed in (out / "cells").glob(f"*/seed*/{FAILED}"):
        failed.unlink()


def _unsettled(out: Path, chosen: Sequence[Cell], seeds: int) -> int:
    """Cells and seeds with neither a result nor a failure of this run."""
    folders = [out / "cells" / c.name / f"seed{s}" for c in chosen for s in range(seeds)]
    return sum(not (f / "result.json").is_file() and not (f / FAILED).is_file() for f in folders)


def _run_workers(out: Path, workers: int, chosen: Sequence[Cell], *, recipe, grid, cells, seeds, steps, num, eval_rows, data, overrides,
                 max_new_tokens, warm_steps) -> None:
    """Run the cells in ``workers`` child studies on the same folder, each with ``cores // workers``
    threads and at most :data:`CELLS_PER_PROCESS` cells before a fresh child takes over, until
    every cell has a result or a failure (claims of an earlier, interrupted run are cleared first:
    only this parent starts workers)."""
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "speechllm", "study", "forgetting", "--recipe", str(recipe), "--out", str(out),
            "--seeds", str(seeds), "--steps", str(steps), "--num", str(num), "--eval-rows", str(eval_rows),
            "--max-new-tokens", str(max_new_tokens), "--workers", str(workers), "--warm-steps", str(warm_steps),
            "--max-cells", str(CELLS_PER_PROCESS)]
    args += ["--cells", cells] if cells else ["--grid", grid]
    args += ["--data", str(data)] if data else []
    # Each child gets its share of the cores (one thread each on 2 cores with 2 workers), whatever
    # thread count the parent ran the shared stage and warm start with: oversubscribed threads on
    # busy cores run many times slower.
    from speechllm.utils.threads import usable_cores

    share = str(max(1, usable_cores() // workers))
    env = {**os.environ, "OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share, "SPEECHLLM_NUM_THREADS": share}
    left = _unsettled(out, chosen, seeds)
    while left:
        for stale in (out / "cells").glob("*/seed*.claim"):
            stale.unlink()
        procs = [subprocess.Popen(args + ["--worker", str(k), "--", *overrides], env=env) for k in range(workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise StudyError(f"{out}: study worker(s) exited with {codes}; rerun the same command to continue")
        before, left = left, _unsettled(out, chosen, seeds)
        if left >= before:
            raise StudyError(f"{out}: the study's workers settled no cell in a round; {left} left")


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, sd


def collect(out: Path, chosen: Sequence[Cell], seeds: int) -> list[dict[str, Any]]:
    """One entry per (cell, merge λ): mean, sd and per-seed values of every metric."""
    entries = []
    for cell in chosen:
        per: dict[float, list[dict[str, Any]]] = {}
        for seed in range(seeds):
            path = out / "cells" / cell.name / f"seed{seed}" / "result.json"
            if path.is_file():
                for rec in json.loads(path.read_text(encoding="utf-8"))["rows"]:
                    per.setdefault(rec["merge"], []).append(rec)
        for lam, recs in sorted(per.items(), key=lambda kv: -kv[0]):
            e = {"cell": cell.name, "source": cell.source, "scope": cell.scope, "control": cell.control,
                 "merge": lam, "seeds": [r["seed"] for r in recs],
                 "train_s": _mean_sd([r["train_s"] for r in recs])[0],
                 "eval_s": _mean_sd([r["eval_s"] for r in recs])[0],
                 "cpu_s": _mean_sd([r["train_cpu_s"] + r["eval_cpu_s"] if "train_cpu_s" in r else None
                                    for r in recs])[0]}
            for m in METRICS:
                mean, sd = _mean_sd([r.get(m) for r in recs])
                e[m], e[m + "_sd"], e[m + "_per_seed"] = mean, sd, [r.get(m) for r in recs]
            entries.append(e)
    return entries


def _fmt(v: float | None, sd: float | None, n: int) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if n < 2 else f"{v:.3f} ± {sd:.3f}"


def write_table(out: Path, chosen: Sequence[Cell], seeds: int) -> dict[str, Any]:
    """``table.md``, ``table.json``, ``table.csv`` and ``scatter.png`` from the finished cells."""
    import csv
    import io

    from speechllm.utils.fs import atomic_write_text

    entries = collect(out, chosen, seeds)
    base_file = out / "shared" / "base.json"
    base = _read_jsonl(base_file)[0] if base_file.is_file() else None
    head = ["cell", "merge λ", "seeds", "acc (audio)", "target loss", "KL-to-base", "ΔNLL", "IF rate", "refusal",
            "gap (text − audio)", "train s", "eval s", "CPU s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if base is not None:
        lines.append(f"| base LLM | - | - | - | - | 0 | 0 | {base['if_rate']:.3f} | {base['refusal_rate']:.3f} "
                     "| - | - | - | - |")
    warm_file = out / "shared" / "warm" / "warm.json"
    warm = json.loads(warm_file.read_text(encoding="utf-8")) if warm_file.is_file() else None
    if warm is not None and base is not None:  # where every cell starts: the LLM is the base's
        lines.append(f"| warm start (adapter alone, {warm['steps']} steps, seed 0) | - | 1 | {warm['acc_audio']:.3f} "
                     f"| {warm['target_loss']:.3f} (gold) | 0 | 0 | {base['if_rate']:.3f} | {base['refusal_rate']:.3f} "
                     f"| {warm['gap']:.3f} | {warm['train_s']:.0f} | - | {warm['train_cpu_s']:.0f} |")
    for e in entries:
        n = len(e["seeds"])
        cols = [e["cell"], f"{e['merge']:g}", str(n)] + [_fmt(e[m], e[m + "_sd"], n) for m in METRICS] + [
            f"{e['train_s']:.0f}", f"{e['eval_s']:.0f}", "-" if e["cpu_s"] is None else f"{e['cpu_s']:.0f}"]
        lines.append("| " + " | ".join(cols) + " |")
    failed = [json.loads(f.read_text(encoding="utf-8")) for c in chosen
              for f in sorted((out / "cells" / c.name).glob(f"seed*/{FAILED}"))]
    if failed:
        lines += ["", f"{len(failed)} cell runs failed (rerun the command to try them again):"]
        lines += [f"- {f['cell']} seed {f['seed']}: {f['error']}" for f in failed]
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    table = {"base": base, "warm_start": warm, "entries": entries, "failed": failed}
    atomic_write_text(out / "table.json", json.dumps(table, indent=2) + "\n")
    buf = io.StringIO()
    fields = ["cell", "source", "scope", "control", "merge", "seeds", "train_s", "eval_s", "cpu_s"] + [
        x for m in METRICS for x in (m, m + "_sd")]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for e in entries:
        w.writerow({**e, "seeds": " ".join(map(str, e["seeds"]))})
    atomic_write_text(out / "table.csv", buf.getvalue())
    from speechllm.study.claims import claims_markdown

    atomic_write_text(out / "claims.md", claims_markdown(entries))
    if entries:
        plot_scatter(entries, out / "scatter.png")
    return table


def plot_scatter(entries: Sequence[dict[str, Any]], path: Path) -> None:
    """Learning (y) against forgetting (x), one point per cell (error bars: sd over seeds), merge
    λ points joined to their cell: KL-to-base vs held-out accuracy, and ΔNLL vs target loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = sorted({e["scope"] for e in entries})
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(scopes)}
    markers = dict(zip(TARGET_SOURCES, "osD^v", strict=True))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    panels = (("kl_to_base", "acc_audio", "KL-to-base (held-out text prompts)", "held-out gender accuracy (audio)"),
              ("delta_nll", "target_loss", "ΔNLL (held-out text prompts)", "target loss (held-out, own source)"))
    for ax, (xk, yk, xl, yl) in zip(axes, panels, strict=True):
        for e in entries:
            if e[xk] is None or e[yk] is None:
                continue
            ax.errorbar(e[xk], e[yk], xerr=e[xk + "_sd"] or 0, yerr=e[yk + "_sd"] or 0,
                        fmt=markers.get(e["source"], "o"), color=colours[e["scope"]], ms=6 if e["merge"] == 1 else 3,
                        alpha=0.9 if e["merge"] == 1 else 0.5, capsize=2)
            if e["merge"] == 1 and e["control"] != "plain":
                ax.annotate(e["control"], (e[xk], e[yk]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for e in entries:
            by_cell.setdefault(e["cell"], []).append(e)
        for group in by_cell.values():
            pts = sorted((g for g in group if g[xk] is not None and g[yk] is not None), key=lambda g: g["merge"])
            if len(pts) > 1:
                ax.plot([g[xk] for g in pts], [g[yk] for g in pts], ":", color=colours[pts[0]["scope"]], lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[s], marker="o", ls="", label=f"scope {s}") for s in scopes]
    handles += [Line2D([], [], color="grey", marker=markers[s], ls="", label=f"targets {s}")
                for s in TARGET_SOURCES if any(e["source"] == s for e in entries)]
    handles.append(Line2D([], [], color="grey", ls=":", label="merge λ sweep (small points)"))
    axes[1].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle("speechllm study forgetting: learning vs forgetting (mean ± sd over seeds)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def check_known(cells: Sequence[Cell]) -> None:
    """Refuse cells whose parts are unknown (a ConfigError naming the part)."""
    for c in cells:
        if c.source not in TARGET_SOURCES or c.scope not in SCOPES or c.control not in CONTROLS:
            raise ConfigError(f"cell {c.name}: unknown source, scope or control")
