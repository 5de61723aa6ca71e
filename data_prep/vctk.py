"""VCTK: 0.80 (``wav48/<spk>/<spk>_<n>.wav``) and 0.92 (``wav48_silence_trimmed/<spk>/
<spk>_<n>_mic1.flac``); ``txt/<spk>/<spk>_<n>.txt`` transcripts; ``speaker-info.txt`` with
``ID AGE GENDER ACCENTS REGION [COMMENTS]`` (IDs ``225`` in 0.80, ``p225`` in 0.92)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from speechllm.data.importers import (
    CorpusError,
    ManifestBuilder,
    PreparedCorpus,
    register_importer,
    require_corpus_dir,
)


def _readable_accent(code: str) -> str:
    """``NorthernIrish`` -> ``Northern Irish``, ``SouthAfrican`` -> ``South African``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", code)


def read_speaker_info(path: Path) -> dict[str, dict[str, str]]:
    """Speaker (``p225``) -> {age, gender, accent, region} from ``speaker-info.txt``."""
    info: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return info
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].upper() == "ID":
            continue
        speaker = fields[0] if fields[0][0].isalpha() else f"p{fields[0]}"
        region = " ".join(fields[4:])
        region = re.sub(r"\s*\(.*\)\s*$", "", region)  # 0.92 appends comments like "(mic2 files unavailable)"
        info[speaker] = {"age": fields[1], "gender": fields[2],
                         "accent": _readable_accent(fields[3]) if len(fields) > 3 else "",
                         "region": region}
    return info


@register_importer("vctk", labels="transcript, speaker, age, gender, accent, region (speaker-info.txt)",
                   source="https://datashare.ed.ac.uk/handle/10283/3443")
def prepare_vctk(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None, *,
                 mic: str = "mic1") -> PreparedCorpus:
    """Import VCTK 0.80 or 0.92. ``mic`` picks 0.92's microphone: ``mic1``, ``mic2`` or ``both``
    (ids then end in ``_mic1``/``_mic2``); 0.80 has one."""
    if mic not in ("mic1", "mic2", "both"):
        raise CorpusError(f"vctk: mic must be mic1, mic2 or both, got {mic!r}")
    root = require_corpus_dir(corpus_dir, "vctk")
    if (root / "wav48_silence_trimmed").is_dir():
        audio_root, pattern = root / "wav48_silence_trimmed", "*_mic[12].flac"
    elif (root / "wav48").is_dir():
        audio_root, pattern = root / "wav48", "*.wav"
    else:
        raise CorpusError(f"vctk: {root} has neither wav48_silence_trimmed/ (0.92) nor wav48/ (0.80)")
    speakers = read_speaker_info(root / "speaker-info.txt")
    builder = ManifestBuilder("vctk")
    for audio in sorted(audio_root.glob(f"*/{pattern}")):
        speaker = audio.parent.name
        stem = audio.stem
        if pattern.endswith(".flac"):
            base, _, which = stem.rpartition("_")
            if mic != "both" and which != mic:
                continue
            utt_id = stem if mic == "both" else base
        else:
            base = utt_id = stem
        txt = root / "txt" / speaker / f"{base}.txt"
        transcript = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else None
        labels = speakers.get(speaker, {})
        builder.add(id=utt_id, audio=audio, speaker=speaker, transcript=transcript,
                    attributes=dict(labels))
    return builder.finish(output_dir)
