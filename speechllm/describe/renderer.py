"""The seed description: the one function that turns a row's attributes into DeSTA2 text.

Generation, "text reference" evaluation and anything else that needs the description call
:func:`render_description`, so the text is identical everywhere. Format ``desta2-v1``::

    [00:00:01 - 00:00:02]: "These days are long gone." (Gender: Male, Accent: Scottish, Duration: 2s)

- the span is the speech span (``speech_start``/``speech_end`` from the VAD) or the whole clip;
  when the quoted transcript covers only part of the audio (``transcript_coverage``, written by
  the ``asr`` annotator), it is the part the transcript covers; start rounded down and end
  rounded up to whole seconds;
- the quoted text is the transcript, left out for non-speech (``contains_speech`` false) or when
  there is none;
- attributes follow the template's order (or the caller's); missing or empty values are left out;
  when none remain the parentheses are left out too;
- ``desta2-v2`` only: a non-speech row says ``No speech.`` and what the sound is (``sound``),
  without speaker attributes; background noise (``noise``) and ``reverberation`` are named::

    [00:00:00 - 00:00:04]: No speech. (Sound: music, Volume: normal, Duration: 4s)
    [00:00:00 - 00:00:03]: "Glue the sheet." (Gender: Female, SNR level: low, Background noise: pink noise, Reverberation: strong, Duration: 3s)

- ``desta2-v3``: as ``desta2-v2``, with non-speech rows saying plainly that no one speaks::

    [00:00:00 - 00:00:04]: No speech, no speaker, only music. (Volume: normal, Duration: 4s)

A template is immutable once released: a change in wording or order is a new id (``desta2-v2``),
so rows rendered with the old one can still be recognised by their ``description_template``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from speechllm.data.manifest import Utterance
from speechllm.errors import SpeechLLMError

DEFAULT_TEMPLATE = "desta2-v1"


class TemplateError(SpeechLLMError):
    """An unknown description template id."""


@dataclass(frozen=True)
class DescriptionTemplate:
    """A versioned description format: the attribute order and each attribute's label."""

    id: str
    attributes: tuple[str, ...]
    labels: Mapping[str, str]
    capitalised: frozenset[str]  # attributes whose value is written with a capital first letter
    # Non-speech rows (``contains_speech`` false): these attributes are left out (a sound has no
    # speaker, no accent, no speaking rate), and ``no_speech`` is written where the quoted text
    # would stand. Empty (desta2-v1): non-speech rows are rendered like any other.
    speech_only: frozenset[str] = frozenset()
    no_speech: str = ""
    # Non-speech rows with a ``sound``: written instead of ``no_speech``, ``{sound}`` replaced by
    # it (the sound is then not repeated in the parentheses). Empty: ``no_speech`` and "Sound: ...".
    no_speech_sound: str = ""

    def label(self, attribute: str) -> str:
        return self.labels.get(attribute) or attribute.replace("_", " ").capitalize()


TEMPLATES: dict[str, DescriptionTemplate] = {
    "desta2-v1": DescriptionTemplate(
        id="desta2-v1",
        attributes=("gender", "age", "accent", "emotion", "pitch", "volume", "speaking_rate",
                    "snr", "c50", "intent", "duration"),
        labels={
            "gender": "Gender", "age": "Age", "accent": "Accent", "emotion": "Emotion",
            "pitch": "Pitch", "volume": "Volume", "speaking_rate": "Speaking speed",
            "snr": "SNR level", "c50": "C50", "intent": "Intent", "duration": "Duration",
        },
        capitalised=frozenset({"gender"}),
    ),
    # desta2-v2: says what a non-speech clip is ("No speech." and its sound) instead of
    # describing a speaker it does not have, and names background noise and reverberation.
    # Rows without those attributes render exactly as in desta2-v1.
    "desta2-v2": DescriptionTemplate(
        id="desta2-v2",
        attributes=("sound", "gender", "age", "accent", "emotion", "pitch", "volume", "speaking_rate",
                    "snr", "noise", "reverberation", "c50", "intent", "duration"),
        labels={
            "sound": "Sound", "gender": "Gender", "age": "Age", "accent": "Accent", "emotion": "Emotion",
            "pitch": "Pitch", "volume": "Volume", "speaking_rate": "Speaking speed",
            "snr": "SNR level", "noise": "Background noise", "reverberation": "Reverberation",
            "c50": "C50", "intent": "Intent", "duration": "Duration",
        },
        capitalised=frozenset({"gender"}),
        speech_only=frozenset({"gender", "age", "accent", "emotion", "pitch", "speaking_rate", "snr",
                               "noise", "reverberation", "c50", "intent"}),
        no_speech="No speech.",
    ),
}
# desta2-v3: desta2-v2 with a non-speech row that says plainly there is no speaker and what is
# heard instead ("No speech, no speaker, only music."). SmolLM2-135M reading v2's "No speech.
# (Sound: music, ...)" invented a speaker for 24 of 36 speaker questions, for 16 of 36 reading
# this (egs/synthetic/RESULTS.md). Speech rows render as in desta2-v2.
TEMPLATES["desta2-v3"] = replace(
    TEMPLATES["desta2-v2"], id="desta2-v3",
    no_speech="No speech, no speaker.", no_speech_sound="No speech, no speaker, only {sound}.",
)


def get_template(template: str | DescriptionTemplate = DEFAULT_TEMPLATE) -> DescriptionTemplate:
    """A template by id (or the template itself); unknown ids raise listing the known ones."""
    if isinstance(template, DescriptionTemplate):
        return template
    try:
        return TEMPLATES[template]
    except KeyError:
        raise TemplateError(
            f"unknown description template {template!r}; known: {', '.join(TEMPLATES)}"
        ) from None


def format_timestamp(seconds: float) -> str:
    """``HH:MM:SS`` of a whole number of seconds."""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_duration(seconds: float) -> str:
    """``2s`` (whole seconds from 1 s up; one decimal below, so short clips do not read 0s)."""
    if seconds < 1.0:
        return f"{seconds:.1f}s"
    return f"{int(round(seconds))}s"


def _format_value(attribute: str, value: Any, template: DescriptionTemplate) -> str:
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value).strip()
    if attribute in template.capitalised and text:
        text = text[0].upper() + text[1:]
    return text


def _fields(utt_or_row: Utterance | Mapping[str, Any]) -> tuple[str | None, float | None, Mapping[str, Any], Any]:
    """(transcript, duration, attributes, transcript_coverage) of an Utterance or a row."""
    if isinstance(utt_or_row, Utterance):
        u = utt_or_row
        return u.transcript, u.duration, u.attributes, u.extra.get("transcript_coverage")
    row = utt_or_row
    return row.get("transcript"), row.get("duration"), row.get("attributes") or {}, row.get("transcript_coverage")


def render_description(
    utt_or_row: Utterance | Mapping[str, Any],
    template: str | DescriptionTemplate = DEFAULT_TEMPLATE,
    attributes: Sequence[str] | None = None,
) -> str:
    """The seed description of one utterance (an :class:`Utterance` or a manifest row dict).

    ``attributes`` overrides the template's attribute order (and selection); ``duration`` is read
    from the row's ``duration`` field, everything else from ``attributes``.
    """
    tpl = get_template(template)
    transcript, duration, attrs, coverage = _fields(utt_or_row)
    order = list(attributes) if attributes else list(tpl.attributes)

    is_speech = attrs.get("contains_speech") is not False
    text = (transcript or "").strip()
    shows_text = is_speech and bool(text)
    start = attrs.get("speech_start")
    end = attrs.get("speech_end")
    if shows_text and coverage:  # the quoted text speaks for the audio it was heard from, only
        start, end = coverage[0][0], coverage[-1][1]
    elif start is None or end is None:
        start, end = 0.0, duration
    span = ""
    if end is not None:
        span = f"[{format_timestamp(math.floor(start))} - {format_timestamp(math.ceil(end))}]: "

    parts = []
    sound = str(attrs.get("sound") or "").strip()
    sound_said = not is_speech and bool(tpl.no_speech_sound and sound)
    if shows_text:
        parts.append(f'"{text}"')
    elif sound_said:
        parts.append(tpl.no_speech_sound.format(sound=sound))
    elif not is_speech and tpl.no_speech:
        parts.append(tpl.no_speech)

    shown = []
    for name in order:
        if not is_speech and name in tpl.speech_only:
            continue
        if name == "sound" and sound_said:
            continue
        if name == "duration":
            if duration:
                shown.append(f"{tpl.label(name)}: {format_duration(float(duration))}")
            continue
        value = attrs.get(name)
        if value is None:
            continue
        rendered = _format_value(name, value, tpl)
        if rendered:
            shown.append(f"{tpl.label(name)}: {rendered}")
    if shown:
        parts.append(f"({', '.join(shown)})")
    return (span + " ".join(parts)).rstrip()
