"""IEMOCAP: ``Session<n>/sentences/wav/<dialog>/<utt>.wav``; labels from
``Session<n>/dialog/EmoEvaluation/<dialog>.txt`` lines such as
``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`` (categorical
emotion; valence, activation, dominance) and transcripts from
``Session<n>/dialog/transcriptions/<dialog>.txt`` (``<utt> [start-end]: text``)."""

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

EMOTIONS = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "sur": "surprised",
            "fea": "fearful", "dis": "disgusted", "fru": "frustrated", "exc": "excited", "oth": "other"}
_EVAL_LINE = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<utt>\S+)\s+(?P<emo>\S+)\s+"
    r"\[\s*(?P<v>[\d.]+)\s*,\s*(?P<a>[\d.]+)\s*,\s*(?P<d>[\d.]+)\s*\]"
)
_TRANSCRIPT_LINE = re.compile(r"^(?P<utt>Ses\S+)\s+\[[^\]]*\]:\s*(?P<text>.*)$")


def read_emo_evaluation(path: Path) -> dict[str, dict[str, object]]:
    """Utterance -> {emotion code, valence, arousal, dominance} from one EmoEvaluation file."""
    labels: dict[str, dict[str, object]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _EVAL_LINE.match(line.strip())
        if m:
            labels[m["utt"]] = {"emo": m["emo"], "valence": float(m["v"]), "arousal": float(m["a"]),
                                "dominance": float(m["d"])}
    return labels


def read_transcriptions(path: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _TRANSCRIPT_LINE.match(line.strip())
            if m:
                texts[m["utt"]] = m["text"].strip()
    return texts


@register_importer("iemocap", labels="speaker, gender, transcript, emotion (no 'xxx' = no agreement), "
                   "valence, arousal, dominance (EmoEvaluation)",
                   source="https://sail.usc.edu/iemocap/ (by request)")
def prepare_iemocap(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> PreparedCorpus:
    """Import IEMOCAP. ``corpus_dir`` is ``IEMOCAP_full_release`` (holding ``Session1``...).
    ``split`` is the session (``Session1``...), for leave-one-session-out experiments."""
    root = require_corpus_dir(corpus_dir, "iemocap")
    evaluations = sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt"))
    if not evaluations:
        raise CorpusError(f"iemocap: no Session*/dialog/EmoEvaluation/*.txt under {root}")
    builder = ManifestBuilder("iemocap")
    for eval_file in evaluations:
        session_dir = eval_file.parents[2]
        dialog = eval_file.stem
        texts = read_transcriptions(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt")
        for utt_id, label in sorted(read_emo_evaluation(eval_file).items()):
            audio = session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"
            # The speaker's sex is the first letter of the last part (F000 / M012); the session's
            # two actors are told apart by it.
            sex = utt_id.rsplit("_", 1)[-1][:1]
            attributes: dict[str, object] = {
                "gender": sex,
                "valence": label["valence"],
                "arousal": label["arousal"],
                "dominance": label["dominance"],
            }
            emotion = EMOTIONS.get(str(label["emo"]))
            if emotion is not None:
                attributes["emotion"] = emotion
            builder.add(id=utt_id, audio=audio, split=session_dir.name, speaker=f"{utt_id[:5]}{sex}",
                        transcript=texts.get(utt_id), attributes=attributes)
    return builder.finish(output_dir)
