"""The built-in benchmark: questions about the synthetic corpus's held-out split.

``speechllm eval build-builtin SYNTH_TEST_MANIFEST OUT.jsonl`` turns each held-out utterance
(attributes gender, accent, speaking_rate, pitch, volume and a transcript, as ``speechllm synth``
writes them) into items of every kind the harness scores without a judge: attribute questions
(multiple choice or short answer with a label), transcription, and constraint following. So the
mini recipe evaluates fully offline. The choice of distractors and constraints is seeded: the
same manifest and seed give the same file.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from speechllm.data.manifest import Utterance, iter_manifest
from speechllm.eval.items import (
    KIND_ASR,
    KIND_CHOICE,
    KIND_INSTRUCTION,
    KIND_LABEL,
    BenchItem,
    BenchmarkError,
)
from speechllm.utils.jsonl import write_jsonl

HELD_OUT_SPLITS = ("test", "heldout", "held_out", "held-out", "eval")

#: attribute -> (question, asked as). Multiple choice offers the values seen in the manifest.
ATTRIBUTE_QUESTIONS: dict[str, tuple[str, str]] = {
    "gender": ("What is the gender of the speaker?", KIND_CHOICE),
    "accent": ("Which accent does the speaker have?", KIND_CHOICE),
    "speaking_rate": ("How fast is the speaker talking? Answer with one word: {values}.", KIND_LABEL),
    "pitch": ("How would you describe the pitch of the speaker's voice?", KIND_CHOICE),
    "volume": ("How loud is the speaker? Answer with one word: {values}.", KIND_LABEL),
}

#: Constraint-following prompts about the audio (checked by speechllm.eval.constraints).
CONSTRAINT_PROMPTS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Describe the speaker's voice using only lowercase letters.",
     [{"id": "change_case:english_lowercase", "kwargs": {}}]),
    ("Describe what you hear in fewer than 40 words.",
     [{"id": "length_constraints:number_words", "kwargs": {"relation": "less than", "num_words": 40}}]),
    ("Describe the speaker in exactly 3 bullet points, using markdown bullets such as: * point.",
     [{"id": "detectable_format:number_bullet_lists", "kwargs": {"num_bullets": 3}}]),
    ('Answer in JSON with the keys "gender" and "accent": who is speaking?',
     [{"id": "detectable_format:json_format", "kwargs": {}}]),
    ("Start your answer with 'The speaker' and describe the voice.",
     [{"id": "startend:start_checker", "kwargs": {"start_phrase": "The speaker"}}]),
    ("Describe the audio without using the words 'voice' or 'audio'.",
     [{"id": "keywords:forbidden_words", "kwargs": {"forbidden_words": ["voice", "audio"]}}]),
    ("Describe the speaker and end your answer with the exact phrase 'That is all.'",
     [{"id": "startend:end_checker", "kwargs": {"end_phrase": "That is all."}}]),
    ("Describe the speech in at most two sentences and do not use any commas.",
     [{"id": "length_constraints:number_sentences", "kwargs": {"relation": "less than", "num_sentences": 3}},
      {"id": "punctuation:no_comma", "kwargs": {}}]),
    ("Wrap your entire answer in double quotation marks: what does the speaker sound like?",
     [{"id": "startend:quotation", "kwargs": {}}]),
    ("Describe the speaker in capital letters only.",
     [{"id": "change_case:english_capital", "kwargs": {}}]),
]

TRANSCRIBE_INSTRUCTION = "Transcribe the speech in the audio exactly."


def render_seed_description(utt: Utterance) -> str:
    """The utterance's seed description: the manifest's ``description`` field when the describe
    stage wrote one (the exact text target generation used), else
    :func:`speechllm.describe.renderer.render_description` (the one renderer, default template),
    so a text-reference answer reads the same text the training targets were generated from."""
    if isinstance(utt.extra.get("description"), str) and utt.extra["description"].strip():
        return utt.extra["description"]
    from speechllm.describe.renderer import render_description

    return render_description(utt)


def _select_held_out(rows: list[Utterance], split: str | None) -> list[Utterance]:
    if split is not None:
        return [u for u in rows if u.split == split]
    held = [u for u in rows if (u.split or "").lower() in HELD_OUT_SPLITS]
    return held if held else rows


#: Question per attribute in the ``short`` style: one-word answers, every attribute a label item.
SHORT_QUESTIONS: dict[str, str] = {
    "gender": "Is the speaker male or female? Answer with one word: {values}.",
    "accent": "Which accent does the speaker have? Answer with one of: {values}.",
    "speaking_rate": ATTRIBUTE_QUESTIONS["speaking_rate"][0],
    "pitch": "Is the speaker's voice high, normal or low in pitch? Answer with one word: {values}.",
    "volume": ATTRIBUTE_QUESTIONS["volume"][0],
}
BUILTIN_STYLES = ("choice", "short")


def build_builtin_items(manifest: str | os.PathLike, *, split: str | None = None, seed: int = 0,
                        constraints_per_utterance: int = 1, max_choices: int = 4,
                        style: str = "choice") -> list[BenchItem]:
    """Items for every held-out utterance (see the module docstring). ``split`` picks rows by
    their ``split`` field; by default the held-out splits (test, heldout, eval), or every row
    when the manifest has none of them.

    ``style="choice"`` asks gender, accent and pitch as MMAU-style multiple choice (with
    DeSTA2.5's answer-format request); ``style="short"`` asks every attribute for a one-word
    answer scored with ``single_option`` (the label named and no other option), which small
    models answer far more reliably: SmolLM2-135M loops on the answer-format request."""
    if style not in BUILTIN_STYLES:
        raise BenchmarkError(f"unknown built-in benchmark style {style!r}; choose from {', '.join(BUILTIN_STYLES)}")
    rows = _select_held_out(list(iter_manifest(manifest)), split)
    if not rows:
        raise BenchmarkError(f"{manifest}: no rows in split {split!r}")
    values: dict[str, set[str]] = defaultdict(set)
    for u in rows:
        for key in ATTRIBUTE_QUESTIONS:
            if isinstance(u.attributes.get(key), str):
                values[key].add(u.attributes[key])
    rng = random.Random(seed)
    items: list[BenchItem] = []
    for u in rows:
        audio = u.audio_path
        if audio is None:
            continue
        description = render_seed_description(u)
        common = dict(audios=[str(audio)], audio_text=description)
        meta = {"utterance": u.id, "offset": u.offset, "duration": u.duration}
        for key, (question, kind) in ATTRIBUTE_QUESTIONS.items():
            value = u.attributes.get(key)
            if not isinstance(value, str) or len(values[key]) < 2:
                continue  # an attribute with one value in the whole set asks nothing
            options = sorted(values[key])
            if style == "short":
                items.append(BenchItem(id=f"{u.id}/{key}", kind=KIND_LABEL,
                                       instruction=SHORT_QUESTIONS[key].format(values=", ".join(options)),
                                       reference=value, choices=options, category=key,
                                       scorer="single_option", metadata=dict(meta), **common))
            elif kind == KIND_CHOICE:
                others = [v for v in options if v != value]
                rng.shuffle(others)
                choices = sorted([value, *others[: max_choices - 1]])
                rng.shuffle(choices)
                items.append(BenchItem(id=f"{u.id}/{key}", kind=KIND_CHOICE, instruction=question,
                                       reference=value, choices=choices, category=key,
                                       metadata=dict(meta), **common))
            else:
                items.append(BenchItem(id=f"{u.id}/{key}", kind=KIND_LABEL,
                                       instruction=question.format(values=", ".join(options)),
                                       reference=value, choices=options, category=key, scorer="desta",
                                       metadata=dict(meta), **common))
        if u.transcript:
            items.append(BenchItem(id=f"{u.id}/transcript", kind=KIND_ASR,
                                   instruction=TRANSCRIBE_INSTRUCTION, reference=u.transcript,
                                   category="transcription", metadata=dict(meta), **common))
        for j, idx in enumerate(rng.sample(range(len(CONSTRAINT_PROMPTS)),
                                           k=min(constraints_per_utterance, len(CONSTRAINT_PROMPTS)))):
            prompt, constraints = CONSTRAINT_PROMPTS[idx]
            items.append(BenchItem(id=f"{u.id}/constraint{j}", kind=KIND_INSTRUCTION, instruction=prompt,
                                   constraints=[dict(c) for c in constraints], category="constraints",
                                   metadata=dict(meta), **common))
    return items


def write_builtin(manifest: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> int:
    """Build the built-in benchmark and write it as our JSONL. Returns the item count.

    Audio paths are written relative to the output's folder (the reader resolves them against
    it), so a data folder can be moved or shared without rewriting the file."""
    from speechllm.utils.fs import refuse_same_file

    refuse_same_file(manifest, out)
    items = build_builtin_items(manifest, **kwargs)
    base = Path(out).resolve().parent

    def portable(item: BenchItem) -> dict[str, Any]:
        row = item.to_dict()
        row["audios"] = [os.path.relpath(Path(a).resolve(), base) for a in row.get("audios") or []]
        return row

    return write_jsonl(Path(out), (portable(i) for i in items))
