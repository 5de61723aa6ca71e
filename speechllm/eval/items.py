"""The benchmark item: one question for the model, with what is needed to score its answer.

Every loader (Dynamic-SUPERB, MMAU, AIR-Bench, VoiceBench, SAKURA, our JSONL, the built-in set)
turns its published format into :class:`BenchItem` rows, so prompting, inference, scoring and
reports never look at a benchmark's own field names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError

#: Item kinds and what scores them (see :mod:`speechllm.eval.scoring_profiles`).
KIND_LABEL = "label"  # classification / short answer with a label (Dynamic-SUPERB style)
KIND_CHOICE = "multiple_choice"  # choices shown, chosen option parsed (MMAU style)
KIND_ASR = "asr"  # transcription: WER / CER
KIND_OPEN = "open"  # open-ended answer scored 1-10 by a judge (AIR-Bench chat style)
KIND_INSTRUCTION = "instruction"  # verifiable constraints (IFEval / Speech-IFEval style)
KIND_REFUSAL = "refusal"  # harmful request: refusing is correct (AdvBench style)
KINDS = (KIND_LABEL, KIND_CHOICE, KIND_ASR, KIND_OPEN, KIND_INSTRUCTION, KIND_REFUSAL)

#: Label scorers (``BenchItem.scorer`` for label items).
LABEL_SCORERS = ("desta", "exact", "option_letter", "single_option")


class BenchmarkError(SpeechLLMError):
    """A benchmark that cannot be loaded: unknown name, missing file, malformed row (file:line)."""


@dataclass
class BenchItem:
    """One benchmark question.

    ``audios`` are absolute paths (possibly empty for text-only items). ``reference`` is the
    label, the correct choice text, the transcript or the reference answer, by kind.
    ``constraints`` are ``{"id": ..., "kwargs": {...}}`` checks (instruction items).
    ``audio_text`` is the text stand-in for the audio (seed description or transcript): a bare
    LLM (the "text reference" path, or the base model in the speech-vs-text gap) reads it
    instead of hearing the audio.
    """

    id: str
    kind: str
    instruction: str
    audios: list[str] = field(default_factory=list)
    reference: str | None = None
    choices: list[str] = field(default_factory=list)
    category: str = "default"
    constraints: list[dict[str, Any]] = field(default_factory=list)
    scorer: str | None = None
    audio_text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"item {self.id}: unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.scorer is not None and self.kind == KIND_LABEL and self.scorer not in LABEL_SCORERS:
            raise ValueError(
                f"item {self.id}: unknown label scorer {self.scorer!r}; known: {', '.join(LABEL_SCORERS)}"
            )

    def missing_audios(self) -> list[str]:
        """The audio paths that do not exist on disk."""
        return [a for a in self.audios if not Path(a).is_file()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any], *, where: str = "<row>", base_dir: Path | None = None) -> BenchItem:
        """Build from our JSONL schema (the fields of this class); errors name ``where``."""
        if not isinstance(row.get("id"), (str, int)) or str(row.get("id")) == "":
            raise BenchmarkError(f"{where}: field 'id': missing or empty")
        kind = row.get("kind")
        if kind not in KINDS:
            raise BenchmarkError(f"{where}: field 'kind': {kind!r} is not one of {', '.join(KINDS)}")
        instruction = row.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise BenchmarkError(f"{where}: field 'instruction': missing or empty")
        audios = row.get("audios", row.get("audio", []))
        if isinstance(audios, str):
            audios = [audios]
        if not isinstance(audios, list) or not all(isinstance(a, str) for a in audios):
            raise BenchmarkError(f"{where}: field 'audios': expected a list of paths")
        audios = [_resolve(a, base_dir) for a in audios]
        choices = row.get("choices") or []
        if not isinstance(choices, list):
            raise BenchmarkError(f"{where}: field 'choices': expected a list")
        constraints = row.get("constraints") or []
        if not isinstance(constraints, list) or not all(
            isinstance(c, dict) and isinstance(c.get("id"), str) for c in constraints
        ):
            raise BenchmarkError(f"{where}: field 'constraints': expected a list of {{'id': ..., 'kwargs': {{...}}}}")
        reference = row.get("reference")
        if kind in (KIND_LABEL, KIND_CHOICE, KIND_ASR) and reference in (None, ""):
            raise BenchmarkError(f"{where}: field 'reference': a {kind} item needs one")
        if kind == KIND_CHOICE and not choices:
            raise BenchmarkError(f"{where}: field 'choices': a multiple_choice item needs choices")
        try:
            return cls(
                id=str(row["id"]),
                kind=kind,
                instruction=instruction,
                audios=audios,
                reference=None if reference is None else str(reference),
                choices=[str(c) for c in choices],
                category=str(row.get("category") or "default"),
                constraints=constraints,
                scorer=row.get("scorer"),
                audio_text=row.get("audio_text"),
                metadata=dict(row.get("metadata") or {}),
            )
        except ValueError as e:
            raise BenchmarkError(f"{where}: {e}") from None


def _resolve(path: str, base_dir: Path | None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    return str(p)
