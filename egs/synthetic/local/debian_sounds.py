"""Write a LABELS.tsv (as in tests/data/audio) for real recordings that Debian packages install.

- ``alsa-utils``: /usr/share/sounds/alsa/*.wav, eight short clips of one real female voice
  ("Front left", ...; median F0 about 200 Hz) and ``Noise.wav``;
- ``sound-theme-freedesktop``: /usr/share/sounds/freedesktop/stereo/*.oga, real sound effects
  (bell, alarm clock, camera shutter, phone ringing, ...). Its ``audio-channel-*`` clips are the
  ALSA voice again and are left out; so are the links to other files and clips under 0.3 s.

None of these were heard in training: the probe (egs/mini/local/attribute_probe.py --real OUT)
uses them as real speech and real non-speech of kinds the corpus never made. Nothing is copied
into the repository (their licences are GPL-2+ and CC-BY(-SA) 3.0, listed in each package's
/usr/share/doc/*/copyright).

    apt-get install alsa-utils sound-theme-freedesktop
    python egs/synthetic/local/debian_sounds.py dump/synthetic/debian_sounds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ALSA = Path("/usr/share/sounds/alsa")
MIN_SECONDS = 0.3  # audio-volume-change.oga is a 67 ms click: too short to describe
FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write LABELS.tsv into")
    args = ap.parse_args()
    import soundfile as sf

    if not ALSA.is_dir() or not FREEDESKTOP.is_dir():
        print(f"{ALSA} or {FREEDESKTOP} missing: apt-get install alsa-utils sound-theme-freedesktop", file=sys.stderr)
        return 1
    rows = []
    for wav in sorted(ALSA.glob("*.wav")):
        if wav.stem == "Noise":
            rows.append((wav, "non-speech", "-", "-", "alsa-utils (speaker-test noise)"))
        else:
            rows.append((wav, "speech", "ALSA speaker-test voice", "female", "alsa-utils"))
    for oga in sorted(FREEDESKTOP.glob("*.oga")):
        if oga.is_symlink() or oga.stem.startswith("audio-channel-") or sf.info(str(oga)).duration < MIN_SECONDS:
            continue
        rows.append((oga, "non-speech", "-", "-", f"sound-theme-freedesktop ({oga.stem})"))
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["file\tkind\tspeaker\tgender\tsource"] + ["\t".join([str(p), *rest]) for p, *rest in rows]
    (args.out / "LABELS.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{args.out}/LABELS.tsv: {sum(r[1] == 'speech' for r in rows)} speech, "
          f"{sum(r[1] != 'speech' for r in rows)} non-speech clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
