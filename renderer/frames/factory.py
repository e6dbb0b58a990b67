"""Picks the face drawer named by the settings (``avatar.face``).

A name is a built-in drawer (``"stylised"``), an import path ``"package.module:attribute"``
of a callable ``(settings, width, height) -> FrameDrawer`` (a drawer of your own plugs in
through configuration alone), or any other plain name: the portrait avatar of that name in
``avatar.dir`` (made by ``visage avatar create``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from renderer.config import AvatarSettings
from renderer.frames.drawer import FrameDrawer

#: Builds a drawer of ``width`` x ``height`` for the given settings.
DrawerBuilder = Callable[[AvatarSettings, int, int], FrameDrawer]


def _stylised(settings: AvatarSettings, width: int, height: int) -> FrameDrawer:
    from renderer.frames.stylised.face import StylisedFace  # torch set-up only when chosen

    return StylisedFace(width, height, settings.device)


BUILTIN: dict[str, DrawerBuilder] = {"stylised": _stylised}


def _portrait(name: str) -> DrawerBuilder:
    """Builds the portrait avatar ``name`` of ``avatar.dir`` (``visage avatar create``)."""

    def build(settings: AvatarSettings, width: int, height: int) -> FrameDrawer:
        from renderer.portrait.avatar import (
            AvatarError,
            AvatarNotFoundError,
            check_name,
            list_avatars,
        )
        from renderer.portrait.drawer import load_portrait_drawer

        try:
            check_name(name)
            return load_portrait_drawer(settings.dir, name, width, height, settings.device)
        except AvatarNotFoundError:
            pass
        except AvatarError as exc:
            if "bad avatar name" not in str(exc):
                raise
        known = ", ".join(a.name for a in list_avatars(settings.dir)) or "none yet"
        raise ValueError(
            f"unknown face drawer {name!r}; use one of {', '.join(sorted(BUILTIN))} or an "
            f"import path 'package.module:factory', or the name of a portrait avatar in "
            f"{settings.dir} (known: {known}; make one with `visage avatar create`)"
        )

    return build


def drawer_builder(name: str) -> DrawerBuilder:
    """The builder behind a drawer name; ``ValueError`` saying what is known otherwise."""
    if name in BUILTIN:
        return BUILTIN[name]
    module_name, sep, attribute = name.partition(":")
    if not sep:
        return _portrait(name)
    if not module_name or not attribute:
        raise ValueError(
            f"unknown face drawer {name!r}; use one of {', '.join(sorted(BUILTIN))} or an "
            "import path 'package.module:factory'"
        )
    try:
        builder = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"face drawer {name!r} could not be imported: {exc}") from exc
    if not callable(builder):
        raise ValueError(f"face drawer {name!r} is not callable")
    return builder


def build_drawer(
    settings: AvatarSettings, width: int | None = None, height: int | None = None
) -> FrameDrawer:
    """The configured drawer at ``width`` x ``height`` (default: the video size)."""
    w, h = width or settings.width, height or settings.height
    drawer = drawer_builder(settings.face)(settings, w, h)
    if not isinstance(drawer, FrameDrawer) or (drawer.width, drawer.height) != (w, h):
        raise ValueError(
            f"face drawer {settings.face!r} did not build a {w}x{h} FrameDrawer "
            f"(got {type(drawer).__name__})"
        )
    return drawer
