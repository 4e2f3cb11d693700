"""Procedurally drawn scenes with known factors: shape, colour, pattern, background, size, count, position.

Deterministic from a seed. `write_world` writes an ordinary image folder (PNG + a sidecar .txt caption per
image) plus `labels.csv` (every factor of every image, keyed by the same relative path as `images.source`),
which `atlas embed` reads like any other dataset and `atlas eval` uses as ground truth.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from atlas.builtin import cached_folder
from atlas.errors import AtlasError

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
PATTERNS = ("plain", "striped", "dotted")
BACKGROUNDS = {"gray": (128, 128, 128), "sand": (210, 190, 140), "teal": (40, 120, 120), "navy": (20, 30, 80)}
SIZES = ("small", "big")
COUNTS = ("one", "two")
POSITIONS = ("left", "middle", "right")
FACTORS = ("shape", "colour", "pattern", "background", "size", "count", "position")
FACTOR_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "background": tuple(BACKGROUNDS),
    "size": SIZES,
    "count": COUNTS,
    "position": POSITIONS,
}
_PLURAL = {"cross": "crosses"}


@dataclass(frozen=True, slots=True)
class Scene:
    shape: str
    colour: str
    pattern: str
    background: str
    size: str
    count: str
    position: str
    centres: tuple[tuple[float, float], ...]  # object centres, as fractions of the image side

    def caption(self) -> str:
        pattern = "" if self.pattern == "plain" else f"{self.pattern} "
        noun = self.shape if self.count == "one" else _PLURAL.get(self.shape, self.shape + "s")
        det = "a" if self.count == "one" else "two"
        where = {"left": "on the left", "middle": "in the middle", "right": "on the right"}[self.position]
        return f"{det} {self.size} {self.colour} {pattern}{noun} {where} on a {self.background} background"

    def labels(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FACTORS}


def sample_scene(rng: random.Random) -> Scene:
    size, count, position = rng.choice(SIZES), rng.choice(COUNTS), rng.choice(POSITIONS)
    r = _radius(size, count)
    x_lo, x_hi = {"left": (0.0, 1 / 3), "middle": (1 / 3, 2 / 3), "right": (2 / 3, 1.0)}[position]
    x_lo, x_hi = max(x_lo, r), min(x_hi, 1 - r)
    cx = rng.uniform(x_lo, x_hi) if x_hi > x_lo else (x_lo + x_hi) / 2
    if count == "one":
        centres = ((cx, rng.uniform(r, 1 - r)),)
    else:  # two objects, one above the other in the same column, not overlapping
        centres = ((cx, rng.uniform(r, max(r, 0.5 - r))), (cx, rng.uniform(min(1 - r, 0.5 + r), 1 - r)))
    return Scene(
        rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(PATTERNS), rng.choice(list(BACKGROUNDS)),
        size, count, position, centres,
    )  # fmt: skip


def _radius(size: str, count: str) -> float:
    # Small objects stay >= ~9 px across at 32 px, so that a patch-8 ViT can still tell their shapes apart.
    if count == "one":
        return 0.32 if size == "big" else 0.2
    return 0.23 if size == "big" else 0.15


def draw_scene(scene: Scene, image_size: int = 32, supersample: int = 4) -> Image.Image:
    """Draw at `supersample` times the size and downsample, for smooth edges."""
    s = image_size * supersample
    img = Image.new("RGB", (s, s), BACKGROUNDS[scene.background])
    mask = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(mask)
    r = s * _radius(scene.size, scene.count)
    for fx, fy in scene.centres:
        _draw_shape(d, scene.shape, fx * s, fy * s, r)
    fg = Image.new("RGB", (s, s), COLOURS[scene.colour])
    if scene.pattern != "plain":
        pd = ImageDraw.Draw(fg)
        contrast = (255, 255, 255) if sum(COLOURS[scene.colour]) < 300 else (0, 0, 0)
        step = s // 8
        if scene.pattern == "striped":
            for x in range(0, s, step):
                pd.rectangle((x, 0, x + step // 2 - 1, s), fill=contrast)
        else:
            for x in range(step // 2, s, step):
                for y in range(step // 2, s, step):
                    pd.ellipse((x - step / 5, y - step / 5, x + step / 5, y + step / 5), fill=contrast)
    img.paste(fg, (0, 0), mask)
    return img.resize((image_size, image_size), Image.Resampling.LANCZOS)


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float) -> None:
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        d.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=255)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=255)
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else 0.45 * r
            ang = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        d.polygon(pts, fill=255)
    elif shape == "cross":
        w = 0.35 * r
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif shape == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        d.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)


def scenes(n: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(n)]


def render_array(scene_list: list[Scene], image_size: int = 32) -> np.ndarray:
    """uint8 [N, S, S, 3] pixels of the scenes (for training the toy models in memory)."""
    return np.stack([np.asarray(draw_scene(sc, image_size)) for sc in scene_list])


def write_world(out_dir: Path, n_images: int, image_size: int = 32, seed: int = 0) -> Path:
    """Write `n_images` scenes as `out_dir/images/NNNNNN.png` + `.txt` captions, and
    `out_dir/images/labels.csv` (source, factors..., caption). Returns the image folder."""
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(images / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", *FACTORS, "caption"])
        for i, scene in enumerate(scenes(n_images, seed)):
            name = f"{i:06d}.png"
            draw_scene(scene, image_size).save(images / name)
            (images / f"{i:06d}.txt").write_text(scene.caption())
            writer.writerow([name, *(getattr(scene, k) for k in FACTORS), scene.caption()])
    return images


def read_labels(image_root: Path) -> dict[str, dict[str, str]]:
    """source -> {factor: value} from the `labels.csv` that `write_world` put in the image folder."""
    path = image_root / "labels.csv"
    with open(path, newline="") as f:
        return {row["source"]: {k: row[k] for k in FACTORS} for row in csv.DictReader(f)}


def builtin_images_dir(spec: str, n_images: int, image_size: int, seed: int) -> Path:
    """The image folder of a built-in dataset (`builtin:shapes`: the toy world), made on first use and cached."""
    if spec != "builtin:shapes":
        raise AtlasError(f"data.source = {spec!r}: unknown built-in dataset (known: builtin:shapes)")
    name = f"shapes-n{n_images}-s{image_size}-seed{seed}"
    return cached_folder(name, lambda out: write_world(out, n_images, image_size, seed)) / "images"
