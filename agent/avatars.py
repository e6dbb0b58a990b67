"""``visage avatar create/list/remove/show`` (``visage models fetch-face``, which puts the face
models in place, is in ``agent/inventory.py``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from agent.config import Settings

SettingsLoader = Callable[[argparse.Namespace], Settings]


def _fail(message: str) -> int:
    print(f"visage: {message}", file=sys.stderr)
    return 2


def _warn(message: str) -> None:
    print(f"visage: warning: {message}", file=sys.stderr)


def cmd_avatar_create(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """Make a portrait avatar from one photo."""
    from renderer.portrait.avatar import AvatarError, check_name, prepare_avatar, save_avatar
    from renderer.portrait.models import ModelFileError

    start = time.perf_counter()
    folder = settings(args).avatar.dir
    try:
        check_name(args.name)
        if (folder / args.name).exists() and not args.force:  # before the work, not after
            raise AvatarError(
                f"an avatar named {args.name!r} already exists in {folder}; choose another "
                "--name, add --force to replace it, or `visage avatar remove` it first"
            )
        avatar = prepare_avatar(args.photo, args.name, face=args.face, warn=_warn)
        path = save_avatar(folder, avatar, force=args.force)
    except (AvatarError, ModelFileError) as exc:
        return _fail(str(exc))
    source = avatar.meta.get("source", {})
    print(
        f"created avatar {avatar.name!r} in {path} from {args.photo.name} (face "
        f"{avatar.face_index} of {source.get('faces_found', 1)}, "
        f"{source.get('eye_distance', 0):.0f} px between the eyes) in "
        f"{time.perf_counter() - start:.2f} s"
    )
    return 0


def cmd_avatar_list(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """List the avatars in ``avatar.dir``."""
    from renderer.portrait.avatar import list_avatars

    folder = settings(args).avatar.dir
    avatars = list_avatars(folder)
    if args.json:
        data = {"dir": str(folder), "avatars": [a.as_dict() for a in avatars]}
        print(json.dumps(data, indent=2))
        return 0
    if not avatars:
        print(f"no avatars in {folder}; make one with `visage avatar create PHOTO --name NAME`")
        return 0
    width = max(len(a.name) for a in avatars)
    for a in avatars:
        what = f"BROKEN: {a.problem}" if a.problem else f"{a.created}  from {a.source}"
        print(f"{a.name:<{width}}  {what}")
    print(f"({len(avatars)} in {folder})")
    return 0


def cmd_avatar_remove(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """Delete one avatar."""
    from renderer.portrait.avatar import AvatarError, remove_avatar

    try:
        path = remove_avatar(settings(args).avatar.dir, args.name)
    except AvatarError as exc:
        return _fail(str(exc))
    print(f"removed avatar {args.name!r} ({path})")
    return 0


def cmd_avatar_show(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """Write a picture of an avatar's photo with its landmarks drawn on it."""
    from PIL import Image

    from renderer.portrait.avatar import AvatarError, load_avatar
    from renderer.portrait.preview import draw_landmarks

    try:
        avatar = load_avatar(settings(args).avatar.dir, args.name)
    except AvatarError as exc:
        return _fail(str(exc))
    if not 1 <= args.scale <= 4:
        return _fail(f"--scale must be between 1 and 4, got {args.scale}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_landmarks(avatar.image, avatar.landmarks, args.scale)).save(args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_avatar_sample(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """Make the sample avatar ``astronaut`` (scikit-image's public-domain astronaut)."""
    from renderer.portrait.avatar import AvatarError
    from renderer.portrait.models import ModelFileError
    from renderer.portrait.sample import install_sample_avatar

    try:
        install_sample_avatar(settings(args).avatar.dir, force=args.force, wheel=args.wheel)
    except (AvatarError, ModelFileError) as exc:
        return _fail(str(exc))
    return 0


def add_avatar_parsers(
    sub: Any, add_config_flags: Callable[[argparse.ArgumentParser], None], settings: SettingsLoader
) -> None:
    """Register ``visage avatar ...`` on the top-level parser."""
    avatar = sub.add_parser("avatar", help="portrait avatars: create, list, remove, show")
    avatar_sub = avatar.add_subparsers(dest="avatar_command", required=True)

    create = avatar_sub.add_parser(
        "create",
        help="make a portrait avatar from one photo",
        description="Finds the face (the largest, or --face N), computes its 468 landmarks "
        "and stores a 512x512 working photo around it with them in avatar.dir/NAME. The "
        "photo must be a JPEG, PNG, WebP, BMP, TIFF or GIF of at most 20 MB and 40 "
        "megapixels, with at least 48 px between the outer corners of the eyes.",
    )
    create.add_argument("photo", type=Path, help="the portrait photo")
    create.add_argument("--name", required=True, help="avatar name (a-z, 0-9, '-', '_')")
    create.add_argument(
        "--face", type=int, help="which face when there are several: 0 (largest), 1, ..."
    )
    create.add_argument("--force", action="store_true", help="replace an avatar of that name")
    add_config_flags(create)
    create.set_defaults(func=partial(cmd_avatar_create, settings=settings))

    listing = avatar_sub.add_parser("list", help="list the avatars in avatar.dir")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_config_flags(listing)
    listing.set_defaults(func=partial(cmd_avatar_list, settings=settings))

    remove = avatar_sub.add_parser("remove", help="delete an avatar")
    remove.add_argument("name")
    add_config_flags(remove)
    remove.set_defaults(func=partial(cmd_avatar_remove, settings=settings))

    sample = avatar_sub.add_parser(
        "sample",
        help="make the sample avatar 'astronaut' (make install runs it)",
        description="Takes scikit-image's astronaut (a public-domain NASA portrait) out of "
        "the scikit-image 0.26.0 wheel (pip download --no-deps, never installed), checks its "
        "pinned sha256, and creates the avatar 'astronaut' from it in avatar.dir. Does "
        "nothing when an intact one is there.",
    )
    sample.add_argument("--wheel", type=Path, help="a scikit-image 0.26.0 wheel already on disk")
    sample.add_argument("--force", action="store_true", help="make it again")
    add_config_flags(sample)
    sample.set_defaults(func=partial(cmd_avatar_sample, settings=settings))

    show = avatar_sub.add_parser("show", help="draw an avatar's landmarks on its photo (PNG)")
    show.add_argument("name")
    show.add_argument("--out", type=Path, required=True, help="PNG file to write")
    show.add_argument("--scale", type=int, default=2, help="enlarge the photo (1-4, default 2)")
    add_config_flags(show)
    show.set_defaults(func=partial(cmd_avatar_show, settings=settings))
