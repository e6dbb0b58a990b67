"""Face drawers: motion vector in, RGB image out.

``drawer.py`` is the seam (the ``FrameDrawer`` protocol), ``factory.py`` picks the drawer
the settings name, and each implementation lives in a subpackage of its own
(``stylised/``: the procedural torch face). Nothing outside this package imports an
implementation directly.
"""

from renderer.frames.drawer import DrawCancelled, FrameDrawer
from renderer.frames.factory import build_drawer

__all__ = ["DrawCancelled", "FrameDrawer", "build_drawer"]
