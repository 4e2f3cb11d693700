"""A procedurally drawn image world with known factors (shape, colour, pattern, background, size).

Deterministic from a seed. `write_world` writes an ordinary image folder (PNG + a sidecar .txt caption per
image, plus `labels.csv` with every factor) that `atlas embed` reads like any other dataset.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

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
FACTORS = ("shape", "colour", "pattern", "background", "size")


@dataclass(frozen=True, slots=True)
class Scene:
    shape: str
    colour: str
    pattern: str
    background: str
    size: str
    cx: float  # centre, as a fraction of the image side
    cy: float

    def caption(self) -> str:
        pattern = "" if self.pattern == "plain" else f"{self.pattern} "
        return f"a {self.size} {self.colour} {pattern}{self.shape} on a {self.background} background"


def sample_scene(rng: random.Random) -> Scene:
    size = rng.choice(SIZES)
    margin = 0.32 if size == "big" else 0.22
    return Scene(
        shape=rng.choice(SHAPES),
        colour=rng.choice(list(COLOURS)),
        pattern=rng.choice(PATTERNS),
        background=rng.choice(list(BACKGROUNDS)),
        size=size,
        cx=rng.uniform(margin, 1 - margin),
        cy=rng.uniform(margin, 1 - margin),
    )


def draw_scene(scene: Scene, image_size: int = 32, supersample: int = 4) -> Image.Image:
    """Draw at `supersample` times the size and downsample, for smooth edges."""
    s = image_size * supersample
    img = Image.new("RGB", (s, s), BACKGROUNDS[scene.background])
    mask = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(mask)
    r = s * (0.3 if scene.size == "big" else 0.18)
    cx, cy = scene.cx * s, scene.cy * s
    box = (cx - r, cy - r, cx + r, cy + r)
    if scene.shape == "circle":
        d.ellipse(box, fill=255)
    elif scene.shape == "square":
        d.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), fill=255)
    elif scene.shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=255)
    elif scene.shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else 0.45 * r
            ang = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        d.polygon(pts, fill=255)
    elif scene.shape == "cross":
        w = 0.35 * r
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif scene.shape == "ring":
        d.ellipse(box, fill=255)
        d.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)
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


def write_world(out_dir: Path, n_images: int, image_size: int = 32, seed: int = 0) -> Path:
    """Write `n_images` scenes as `out_dir/images/xxxxx.png` + `.txt` captions and `out_dir/labels.csv`."""
    rng = random.Random(seed)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", *FACTORS, "caption"])
        for i in range(n_images):
            scene = sample_scene(rng)
            name = f"{i:06d}.png"
            draw_scene(scene, image_size).save(images / name)
            (images / f"{i:06d}.txt").write_text(scene.caption())
            writer.writerow([f"images/{name}", *(getattr(scene, k) for k in FACTORS), scene.caption()])
    return images
