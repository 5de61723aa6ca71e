"""CREMA-D: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (e.g. ``1001_DFA_ANG_XX.wav``)
and ``VideoDemographics.csv`` (``ActorID,Age,Sex,Race,Ethnicity``)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from speechllm.data.importers import (
    CorpusError,
    ManifestBuilder,
    PreparedCorpus,
    register_importer,
    require_corpus_dir,
)
from speechllm.utils.textfile import utf8_lines

EMOTIONS = {"ANG": "angry", "DIS": "disgusted", "FEA": "fearful", "HAP": "happy", "NEU": "neutral",
            "SAD": "sad"}
INTENSITIES = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}


def read_demographics(path: Path) -> dict[str, dict[str, str]]:
    """Actor id -> {age, gender} from ``VideoDemographics.csv``."""
    actors: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return actors
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(utf8_lines(f, path)):
            actor = (row.get("ActorID") or "").strip()
            if actor:
                actors[actor] = {"age": row.get("Age", ""), "gender": row.get("Sex", "")}
    return actors


@register_importer("cremad", labels="speaker, transcript (sentence code), emotion, emotion_intensity, "
                   "age, gender (VideoDemographics.csv)",
                   source="https://github.com/CheyneyComputerScience/CREMA-D")
def prepare_cremad(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> PreparedCorpus:
    """Import CREMA-D. ``corpus_dir`` holds ``AudioWAV/`` (or is it)."""
    root = require_corpus_dir(corpus_dir, "cremad")
    audio_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    files = sorted(audio_dir.glob("*.wav"))
    if not files:
        raise CorpusError(f"cremad: no AudioWAV/*.wav under {root}")
    demographics = read_demographics(root / "VideoDemographics.csv")
    builder = ManifestBuilder("cremad")
    for audio in files:
        parts = audio.stem.split("_")
        if len(parts) != 4 or parts[2] not in EMOTIONS:
            builder.skip("unrecognised_name", str(audio))
            continue
        actor, sentence, emotion, level = parts
        attributes = {"emotion": EMOTIONS[emotion], "emotion_intensity": INTENSITIES.get(level, level.lower())}
        attributes.update(demographics.get(actor, {}))
        builder.add(id=audio.stem, audio=audio, speaker=actor, transcript=SENTENCES.get(sentence),
                    attributes=attributes)
    return builder.finish(output_dir)
