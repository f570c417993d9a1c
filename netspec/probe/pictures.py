"""Grids of small images with captions, drawn with Pillow and written atomically as PNG.

A grid has ``rows`` x ``cols`` cells; each cell is a tile of ``tile_h*zoom`` x ``tile_w*zoom``
pixels (nearest-neighbour enlarged, so single pixels stay visible) above ``caption_lines``
lines of text, separated by ``PAD`` pixels; a title strip sits above the whole grid.  Its size
is ``grid_size(...)``, so callers (and tests) know the picture's dimensions in advance.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAD = 4                  # pixels between cells and around the grid
LINE = 12                # pixels per line of caption (Pillow's default bitmap font is 11 high)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def grid_size(rows: int, cols: int, tile_h: int, tile_w: int, zoom: int = 1, caption_lines: int = 0,
              title_lines: int = 0) -> tuple[int, int]:
    """(width, height) in pixels of a grid drawn by ``Grid``."""
    cell_w = tile_w * zoom
    cell_h = tile_h * zoom + caption_lines * LINE
    width = PAD + cols * (cell_w + PAD)
    height = PAD + title_lines * LINE + rows * (cell_h + PAD)
    return width, height


def to_rgb(img: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(C, H, W) or (H, W) values -> (H, W, 3) uint8, mapping [lo, hi] (default: the image's own
    minimum and maximum) to 0..255; one channel is grey, three are RGB, other counts show the first."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3:
        a = a.transpose(1, 2, 0) if a.shape[0] == 3 else a[0]
    lo = float(a.min()) if lo is None else lo
    hi = float(a.max()) if hi is None else hi
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def symmetric(img: np.ndarray) -> np.ndarray:
    """Signed values (filters, perturbations, gradients) -> RGB with 0 as mid grey."""
    m = float(np.abs(img).max())
    return to_rgb(img, -m, m) if m > 0 else to_rgb(np.zeros_like(img), -1, 1)


def heatmap(values: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """(H, W) non-negative values -> (H, W, 3) uint8 through a matplotlib colour map."""
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64)
    m = float(v.max())
    v = v / m if m > 0 else v
    return (colormaps[cmap](v)[..., :3] * 255 + 0.5).astype(np.uint8)


@dataclass
class Grid:
    """Cells placed row by row; ``image()`` draws them."""

    cols: int
    tile_h: int
    tile_w: int
    zoom: int = 1
    caption_lines: int = 0
    title: list[str] = field(default_factory=list)
    cells: list[tuple[np.ndarray | None, list[str]]] = field(default_factory=list)
    min_width: int = 0              # widen the picture (to fit a title) without moving the cells

    def add(self, rgb: np.ndarray | None, caption: str | list[str] = ()) -> None:
        """One cell: an (H, W, 3) uint8 tile (None: left blank) and its caption lines."""
        lines = [caption] if isinstance(caption, str) else list(caption)
        self.cells.append((rgb, lines[: self.caption_lines]))

    def pad_row(self) -> None:
        """Blank cells up to the end of the current row."""
        while len(self.cells) % self.cols:
            self.cells.append((None, []))

    @property
    def rows(self) -> int:
        return max(1, -(-len(self.cells) // self.cols))

    @property
    def size(self) -> tuple[int, int]:
        w, h = grid_size(self.rows, self.cols, self.tile_h, self.tile_w, self.zoom, self.caption_lines,
                         len(self.title))
        return max(w, self.min_width), h

    def image(self):
        from PIL import Image, ImageDraw, ImageFont

        img = Image.new("RGB", self.size, BACKGROUND)
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default()
        for i, line in enumerate(self.title):
            draw.text((PAD, PAD + i * LINE), line, fill=TEXT, font=font)
        top = PAD + len(self.title) * LINE
        cw, th = self.tile_w * self.zoom, self.tile_h * self.zoom
        ch = th + self.caption_lines * LINE
        chars = max(1, cw // 6)          # the default font is about 6 pixels a character
        for k, (rgb, lines) in enumerate(self.cells):
            r, c = divmod(k, self.cols)
            x, y = PAD + c * (cw + PAD), top + r * (ch + PAD)
            if rgb is not None:
                tile = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
                if tile.size != (cw, th):
                    tile = tile.resize((cw, th), Image.NEAREST)
                img.paste(tile, (x, y))
            for j, line in enumerate(lines):
                draw.text((x, y + th + j * LINE), line[:chars], fill=TEXT, font=font)
        return img


def save_png(image, path: str | os.PathLike) -> Path:
    """Write a Pillow image as PNG, atomically."""
    from netspec.io.atomic import atomic_write

    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return atomic_write(path, buf.getvalue())


def stack(images: list, gap: int = PAD):
    """Pillow images one above the other (left-aligned) in one picture."""
    from PIL import Image

    w = max(i.size[0] for i in images)
    h = sum(i.size[1] for i in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (w, h), BACKGROUND)
    y = 0
    for i in images:
        out.paste(i, (0, y))
        y += i.size[1] + gap
    return out
