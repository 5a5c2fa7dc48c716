"""A faster CarRacing-v3 whose observations are byte-identical to gymnasium's.

Stock CarRacing spends most of each step in Python, rebuilding and
transforming ~800 polygons per frame (400 grass patches + ~400 road/kerb
tiles) only to cull all but ~60 of them, and re-creating per-frame objects (a
1000x800 canvas, a TrueType font loaded from disk). `FastCarRacing` keeps every
pixel-producing call identical -- same pygame draw functions, same arguments,
same order, same float arithmetic -- and only removes work that cannot affect
the pixels:

* culling: one vectorised numpy pass rejects the polygons that are certainly
  off-screen (with a safety margin); survivors go through the stock
  `_draw_colored_polygon`, which recomputes their exact coordinates and applies
  the exact stock visibility test, so exactly the same polygons are drawn;
* static geometry (grass patches, road vertices) is built once, not per frame;
* when the background square provably covers the whole screen (the usual case)
  it is painted with one `fill` of the colour gfxdraw itself maps, instead of
  scan-filling a ~10000 px polygon whose rows are mostly off-screen;
* the canvas and the font are created once and reused (the font was re-loaded
  from disk, and its glyph cache rebuilt, on every frame).
"""

import math
import os
from dataclasses import replace

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402
from gymnasium.envs.box2d import car_racing as _cr  # noqa: E402
from gymnasium.envs.box2d.car_racing import CarRacing  # noqa: E402
from pygame import gfxdraw  # noqa: E402

W, H = _cr.WINDOW_W, _cr.WINDOW_H
# Stock visibility box, widened by a 1 px margin: numpy's cos/sin rotation may
# differ from pygame's Vector2.rotate_rad by far less than a pixel, so the numpy
# cull is a strict superset of the stock test, never dropping a drawn polygon.
_MARGIN = 1.0
_LO = -_cr.MAX_SHAPE_DIM - _MARGIN
_HI_X = W + _cr.MAX_SHAPE_DIM + _MARGIN
_HI_Y = H + _cr.MAX_SHAPE_DIM + _MARGIN

_G = _cr.GRASS_DIM
# Grass patches never change: the same vertices (same expressions, same order)
# as stock `_render_road` builds on every frame, built once here.
_GRASS = [
    [
        (_G * x + _G, _G * y + 0),
        (_G * x + 0, _G * y + 0),
        (_G * x + 0, _G * y + _G),
        (_G * x + _G, _G * y + _G),
    ]
    for x in range(-20, 20, 2)
    for y in range(-20, 20, 2)
]
_GRASS_XY = np.array(_GRASS, dtype=np.float64)
# Screen margin (px) for the background fill shortcut: covers gfxdraw's integer
# rounding of vertices and the 1 px anti-aliased outline.
_FILL_MARGIN = 4.0
_B = _cr.PLAYFIELD
_FIELD = [(_B, _B), (_B, -_B), (-_B, -_B), (-_B, _B)]


def _maybe_visible(xy: np.ndarray, zoom: float, trans, angle: float) -> np.ndarray:
    """Indices (ascending, i.e. stock draw order) of polygons possibly on screen."""
    c, s = math.cos(angle), math.sin(angle)
    px, py = xy[..., 0], xy[..., 1]
    x = (px * c - py * s) * zoom + trans[0]
    y = (px * s + py * c) * zoom + trans[1]
    inside = (x >= _LO) & (x <= _HI_X) & (y >= _LO) & (y <= _HI_Y)
    return np.flatnonzero(inside.any(axis=1))


class FastCarRacing(CarRacing):
    """CarRacing with cached/vectorised rendering; observations byte-identical."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._road_xy = np.zeros((0, 4, 2))
        self._canvas = None  # reused 1000x800 drawing surface
        self._font = None

    def _create_track(self):
        ok = super()._create_track()
        if ok:  # road vertices are fixed for the episode; colours are not (see below)
            self._road_xy = np.array([p for p, _ in self.road_poly], dtype=np.float64)
        return ok

    def _render_road(self, zoom, translation, angle):
        surf, draw = self.surf, self._draw_colored_polygon
        if not self._background_covers_screen(zoom, translation, angle):
            # A fresh pygame.Surface is all zeros; filling the reused canvas with
            # black gives the same starting pixels (aapolygon blends onto them).
            surf.fill((0, 0, 0))
            draw(surf, _FIELD, self.bg_color, zoom, translation, angle, clip=False)
        for i in _maybe_visible(_GRASS_XY, zoom, translation, angle):
            draw(surf, _GRASS[i], self.grass_color, zoom, translation, angle)
        for i in _maybe_visible(self._road_xy, zoom, translation, angle):
            poly, color = self.road_poly[i]
            # Tile colours are mutated in place by the contact listener, so read
            # them at draw time exactly like stock does.
            draw(surf, poly, [int(c) for c in color], zoom, translation, angle)

    def _background_covers_screen(self, zoom, translation, angle) -> bool:
        """Paint the background with one fill() if its polygon covers the screen.

        Usually the 667x667 playfield square spans ~10000 px on screen; filling
        it with gfxdraw scans all its (mostly off-screen) rows. When the screen,
        widened by _FILL_MARGIN px, is inside the square (exact stock vertex
        coordinates), filled_polygon would paint every pixel with the bg colour
        and aapolygon's edges (1 px wide) would miss the screen entirely, so a
        plain fill with the same mapped colour gives the same bytes.
        """
        v2 = pygame.math.Vector2
        pts = [v2(c).rotate_rad(angle) for c in _FIELD]
        pts = [(c[0] * zoom + translation[0], c[1] * zoom + translation[1]) for c in pts]
        if any(abs(c) > 30000 for p in pts for c in p):  # gfxdraw works in Sint16
            return False
        m = _FILL_MARGIN
        corners = [(-m, -m), (W + m, -m), (W + m, H + m), (-m, H + m)]
        # Inside a convex polygon <=> on the same side of every edge.
        crosses = [
            (bx - ax) * (y - ay) - (by - ay) * (x - ax)
            for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1], strict=True)
            for x, y in corners
        ]
        if not (all(c > 0 for c in crosses) or all(c < 0 for c in crosses)):
            return False
        # Let gfxdraw itself map the colour (same float->int conversion as stock)
        # on a corner that the fill overwrites anyway, then fill with that value.
        surf = self.surf
        gfxdraw.filled_polygon(surf, [(-5, -5), (5, -5), (5, 5), (-5, 5)], self.bg_color)
        surf.fill(surf.get_at_mapped((0, 0)))
        return True

    def _render(self, mode: str):
        # Only the offscreen modes are sped up; "human" keeps the stock path
        # (which still benefits from the faster _render_road).
        if mode not in ("state_pixels", "rgb_array") or "t" not in self.__dict__:
            return super()._render(mode)
        if self._canvas is None or not pygame.font.get_init():
            pygame.font.init()
            self._canvas = pygame.Surface((W, H))
            self._font = pygame.font.Font(pygame.font.get_default_font(), 42)
        self.surf = self._canvas  # cleared by _render_road

        angle = -self.car.hull.angle
        zoom = 0.1 * _cr.SCALE * max(1 - self.t, 0) + _cr.ZOOM * _cr.SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (W / 2 + trans[0], H / 4 + trans[1])

        self._render_road(zoom, trans, angle)
        self.car.draw(self.surf, zoom, trans, angle, mode != "state_pixels")  # particles
        self.surf = pygame.transform.flip(self.surf, False, True)
        self._render_indicators(W, H)
        # The font is deterministic: rendering with a cached Font object gives
        # the same glyph pixels as loading the TTF file anew every frame.
        text = self._font.render(f"{self.reward:04.0f}", True, (255, 255, 255), (0, 0, 0))
        text_rect = text.get_rect()
        text_rect.center = (60, H - H * 2.5 / 40.0)
        self.surf.blit(text, text_rect)

        size = (_cr.STATE_W, _cr.STATE_H) if mode == "state_pixels" else (_cr.VIDEO_W, _cr.VIDEO_H)
        return self._create_image_array(self.surf, size)

    def close(self):
        self._canvas = self._font = None
        super().close()


_KINDS = ("fast", "stock")


def make_env(kind: str = "fast", **kwargs) -> gym.Env:
    """CarRacing-v3 through `gymnasium.make` (same wrappers, 1000-step TimeLimit).

    kind="stock" is exactly `gym.make("CarRacing-v3", **kwargs)`; kind="fast" is
    the same spec with `FastCarRacing` as entry point.
    """
    if kind not in _KINDS:
        raise ValueError(f"collect.env: expected one of 'fast', 'stock', got {kind!r}")
    spec = gym.spec("CarRacing-v3")
    if kind == "fast":
        spec = replace(spec, id="FastCarRacing-v3", entry_point=FastCarRacing)
    return gym.make(spec, **kwargs)
