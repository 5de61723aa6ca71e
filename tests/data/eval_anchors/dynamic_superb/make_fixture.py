"""Write a Dynamic-SUPERB task folder in the layout its datasets are published in on the Hugging
Face hub (``DynamicSuperb/<Task>``), with made-up rows:

    python tests/data/eval_anchors/dynamic_superb/make_fixture.py

The layout and schema are the published ones (the dataset card of, e.g.,
``DynamicSuperb/FraudRobocallRecognition_Promo`` declares the features ``audio`` (dtype audio),
``file``, ``instruction``, ``label`` (strings) and one ``test`` split in
``data/test-00000-of-00001.parquet``); an ``audio`` cell is what the ``datasets`` library stores
for its Audio feature, a struct of the encoded file's ``bytes`` and its ``path``, and the file
carries the library's ``huggingface`` schema metadata. The rows (0.1 s of silence, labels and
instructions) are made up: DeSTA2/DeSTA2.5 publish no per-item Dynamic-SUPERB outputs to take
rows from. Labels include ones that Whisper's basic normaliser empties ("(A)", "[laughter]").
"""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TASK = Path(__file__).resolve().parent / "SpeakerCounting_Fixture"
CARD = """---
dataset_info:
  features:
  - name: audio
    dtype: audio
  - name: file
    dtype: string
  - name: instruction
    dtype: string
  - name: label
    dtype: string
  splits:
  - name: test
    num_bytes: {num_bytes}
    num_examples: {n}
  download_size: {num_bytes}
  dataset_size: {num_bytes}
configs:
- config_name: default
  data_files:
  - split: test
    path: data/test-*
---
"""
ROWS = [
    ("clip_0001.wav", "How many speakers are there? Answer with a number.", "2"),
    ("clip_0002.wav", "Which option fits? (A) one speaker (B) two speakers", "(A)"),
    ("clip_0003.wav", "Which vocal event occurs in the audio?", "[laughter]"),
]


def silence_wav(seconds: float = 0.1, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def main() -> None:
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"audio": {"sampling_rate": 16000, "_type": "Audio"},
                "file": {"dtype": "string", "_type": "Value"},
                "instruction": {"dtype": "string", "_type": "Value"},
                "label": {"dtype": "string", "_type": "Value"}}
    schema = pa.schema([("audio", audio_type), ("file", pa.string()), ("instruction", pa.string()),
                        ("label", pa.string())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    wav = silence_wav()
    table = pa.table({"audio": [{"bytes": wav, "path": f} for f, _, _ in ROWS],
                      "file": [f for f, _, _ in ROWS], "instruction": [i for _, i, _ in ROWS],
                      "label": [lab for _, _, lab in ROWS]}, schema=schema)
    (TASK / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, TASK / "data" / "test-00000-of-00001.parquet")
    (TASK / "README.md").write_text(CARD.format(num_bytes=len(wav) * len(ROWS), n=len(ROWS)), encoding="utf-8")
    print(f"wrote {TASK}")


if __name__ == "__main__":
    main()
