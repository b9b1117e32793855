"""Pixels for the demo's synthetic data: flat shapes on tinted grid cells, at most one per cell.

Why so plain: a tiny random Qwen2-VL trained from scratch for a few minutes on a CPU can only learn
grounding when the scenes are easy to see and the answers easy to say. Every object is drawn inside
one cell of a 3x3 grid (jittered in size and position, >= 3 px from the cell's edges) and its box is
that cell. So each answer is one of 9 boxes whose first digit names the column and row (x1, y1 in
0/333/667 on the 0-1000 grid), boxes of different cells never overlap, and Acc@0.5 is exactly cell
accuracy. Measured here: with boxes hugging the jittered shapes instead, the tiny model trained one
epoch on 3,000 mixed records answered well-formed but cell-blind boxes (5% Acc@0.5; the first digit
of x1 did not tell the columns apart). With 84 px images each 28 px cell is exactly one merged
Qwen2-VL visual token (2x2 patches of 14 px).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from random import Random

from PIL import Image, ImageDraw

from core.grounding import pixel_box_to_grid

# Backgrounds sit near the image processor's normalisation mean (CLIP's 0.48, 0.46, 0.41), so plain
# background patches normalise to ~0. Measured on near-white backgrounds (+1.8 after normalisation):
# training grew the patch embedding along that constant input until every image token was nearly the
# same large vector (merger output norm 1.4 -> 23, token-to-token spread 0.41 -> 0.19) and the model
# ignored the images; on these backgrounds the spread grows with the norm instead (1.3 -> 27).
BACKGROUND = (120, 118, 110)  # outside the grid: source images of referring/free-form tasks
MARKER = (255, 0, 0)  # the red box of object tracking (not a shape colour: shapes' red is darker)
# Every grounding target is red and nothing else in its image is. All tasks keep their own logic and
# questions, but they share one visual rule, so the few thousand grounding samples a CPU demo can
# afford all teach the same skill (find the red object in the right image, say its cell).
TARGET = "red"
COLORS = {
    "red": (210, 30, 30),
    "blue": (30, 80, 230),
    "green": (30, 170, 60),
    "yellow": (240, 200, 20),
    "purple": (160, 50, 200),
}
DISTRACTORS = tuple(c for c in COLORS if c != TARGET)
SHAPES = ("circle", "square", "triangle")
GRID = 3
N_CELLS = GRID * GRID
CELL_NAMES = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
# Each grid cell's background has its own light tint (column -> red channel, row -> blue channel), so
# every visual token carries which cell it shows: the tiny model has only relative (RoPE) positions.
# Measured (single image, "where is the red shape?", 800 steps of 8, lr 3e-4): 39% exact with tints,
# 12% (chance) on a plain background.
_TINT_R = (80, 120, 160)  # by column
_TINT_B = (70, 110, 150)  # by row


def tint(cell: int) -> tuple[int, int, int]:
    """Background colour of a grid cell (greyish, far from every shape colour)."""
    row, col = divmod(cell, GRID)
    return (_TINT_R[col], 118, _TINT_B[row])


@dataclass(frozen=True)
class Obj:
    """One shape: its colour name, shape name and grid cell (0..8, row-major)."""

    color: str
    shape: str
    cell: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


def cell_edges(size: int) -> list[int]:
    """Pixel edges of the 3 grid rows/columns of an image side of `size` pixels."""
    return [round(i * size / GRID) for i in range(GRID + 1)]


def cell_box(cell: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom; right/bottom exclusive) of a grid cell."""
    xs, ys = cell_edges(width), cell_edges(height)
    row, col = divmod(cell, GRID)
    return xs[col], ys[row], xs[col + 1], ys[row + 1]


def _shape_coords(rng: Random, cell: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """Top-left corner and side of a shape inside a cell, jittered a little, >= 3 px from the edges.

    The 3 px keep room for the object-tracking marker (1 px gap + 1 px line) inside the cell.
    """
    x0, y0, x1, y1 = cell
    span = min(x1 - x0, y1 - y0)
    side = max(6, round(span * rng.uniform(0.6, 0.76)))
    side = min(side, span - 6)
    out = []
    for lo, hi in ((x0, x1), (y0, y1)):
        slack = hi - lo - side
        room = max(0, min(2 * max(1, span // 37), slack // 2 - 3))
        out.append(lo + slack // 2 + rng.randint(-room, room))
    return out[0], out[1], side


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: int, y: int, side: int, fill) -> None:
    last = side - 1
    if shape == "square":
        draw.rectangle([x, y, x + last, y + last], fill=fill)
    elif shape == "circle":
        draw.ellipse([x, y, x + last, y + last], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x + last // 2, y), (x, y + last), (x + last, y + last)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def place(rng: Random, objs: list[Obj], width: int, height: int) -> list[tuple[int, int, int]]:
    """Jittered geometry (x, y, side) for each object; kept apart from drawing so a scene can be
    redrawn with one change and stay pixel-identical elsewhere (spot the difference)."""
    cells = [o.cell for o in objs]
    if len(set(cells)) != len(cells):
        raise ValueError(f"two objects share a cell: {objs}")
    return [_shape_coords(rng, cell_box(o.cell, width, height)) for o in objs]


def draw_scene(
    objs: list[Obj],
    geoms: list[tuple[int, int, int]],
    width: int,
    height: int,
    marked: int | None = None,
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Draw `objs` at `geoms`; return the image and each object's box (its grid cell, in pixels).

    `marked` is the index of an object to surround with a red 1-px outline (object tracking).
    Boxes are (left, top, right, bottom) with right/bottom exclusive.
    """
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for cell in range(N_CELLS):
        left, top, right, bottom = cell_box(cell, width, height)
        draw.rectangle([left, top, right - 1, bottom - 1], fill=tint(cell))
    for obj, (x, y, side) in zip(objs, geoms, strict=True):
        _draw_shape(draw, obj.shape, x, y, side, COLORS[obj.color])
    if marked is not None:
        x, y, side = geoms[marked]
        draw.rectangle([x - 2, y - 2, x + side + 1, y + side + 1], outline=MARKER, width=1)
    return image, [cell_box(obj.cell, width, height) for obj in objs]


def render(
    rng: Random, objs: list[Obj], width: int, height: int, marked: int | None = None
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Place and draw in one go (see `place` and `draw_scene`)."""
    return draw_scene(objs, place(rng, objs, width, height), width, height, marked)


def render_single(rng: Random, obj_color: str, obj_shape: str, size: int) -> Image.Image:
    """A 'source' image: one large shape in the middle (referring grounding, free-form)."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    side = round(size * rng.uniform(0.45, 0.6))
    x = (size - side) // 2 + rng.randint(-2, 2)
    y = (size - side) // 2 + rng.randint(-2, 2)
    _draw_shape(ImageDraw.Draw(image), obj_shape, x, y, side, COLORS[obj_color])
    return image


def crop_cell(image: Image.Image, cell: int, size: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Crop one grid cell and blow it up to size x size (nearest neighbour keeps flat colours)."""
    box = cell_box(cell, *image.size)
    return image.crop(box).resize((size, size), Image.Resampling.NEAREST), box


def to_grid(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box -> Qwen2-VL's 0-1000 relative integer grid (x1, y1, x2, y2), the project's one rule."""
    return pixel_box_to_grid(box, width, height)


def to_unit(box: tuple[int, int, int, int], width: int, height: int) -> list[float]:
    """Pixel box -> MIG-Bench's answer floats in 0-1, 3 decimals."""
    left, top, right, bottom = box
    return [
        round(left / width, 3),
        round(top / height, 3),
        round(right / width, 3),
        round(bottom / height, 3),
    ]


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding (no timestamps or text chunks)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    """JPEG for the COCO-layout images (their published names end in .jpg)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()
