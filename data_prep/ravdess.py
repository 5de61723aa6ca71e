"""RAVDESS: ``Actor_NN/MM-VV-EE-II-SS-RR-AA.wav``; seven two-digit codes in the file name:
modality, vocal channel, emotion, intensity, statement, repetition, actor (odd = male)."""

from __future__ import annotations

import os

from speechllm.data.importers import (
    CorpusError,
    ManifestBuilder,
    PreparedCorpus,
    register_importer,
    require_corpus_dir,
)

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgusted", "08": "surprised"}
INTENSITIES = {"01": "normal", "02": "strong"}
CHANNELS = {"01": "speech", "02": "song"}
STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}


@register_importer("ravdess", labels="speaker, transcript, emotion, emotion_intensity, gender, "
                   "vocal_channel (speech/song), all from file-name codes",
                   source="https://zenodo.org/record/1188976")
def prepare_ravdess(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> PreparedCorpus:
    """Import RAVDESS audio (speech and song): every ``Actor_*/*.wav`` below ``corpus_dir``."""
    root = require_corpus_dir(corpus_dir, "ravdess")
    files = sorted(root.rglob("Actor_*/*.wav"))
    if not files:
        raise CorpusError(f"ravdess: no Actor_*/*.wav under {root}")
    builder = ManifestBuilder("ravdess")
    for audio in files:
        codes = audio.stem.split("-")
        if len(codes) != 7 or codes[2] not in EMOTIONS or not codes[6].isdigit():
            builder.skip("unrecognised_name", str(audio))
            continue
        _modality, channel, emotion, intensity, statement, _rep, actor = codes
        attributes = {
            "emotion": EMOTIONS[emotion],
            "emotion_intensity": INTENSITIES.get(intensity),
            "gender": "male" if int(actor) % 2 else "female",
            "vocal_channel": CHANNELS.get(channel),
        }
        builder.add(id=audio.stem, audio=audio, speaker=f"Actor_{actor}",
                    transcript=STATEMENTS.get(statement), attributes=attributes)
    return builder.finish(output_dir)
