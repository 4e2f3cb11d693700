"""`atlas steer`, `atlas concepts`, `atlas interpolate` end to end on a small toy-world atlas built through the
CLI, the same functions from Python, bad input as one `error:` line, and (when the toy decoder's weights
exist) the colour demos judged by the toy CLIP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from atlas.generation import concepts_strip, interpolate_strip, steer
from atlas.session import ModelSession
from atlas.store import AtlasStore
from atlas.toyworld import write_world
from atlas.toyworld.decoder_model import GUIDANCE
from atlas.toyworld.world import Scene, read_labels
from jobs.cli import app

N_IMAGES = 100
TILE = 128


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    images = write_world(root / "world", N_IMAGES, 32, seed=3)
    cfg = root / "atlas.toml"
    cfg.write_text(
        f"""
[data]
source = "{images}"
[embed]
batch_size = 50
part_size = 50
[sae]
expansion_factor = 2
epochs = 6
batch_size = 32
log_every = 5
[featurize]
top_k = 5
[render]
steps = 2
batch_size = 8
part_size = 64
max_features = 8
[directions]
pairs = [["red", "blue"]]
mediums = ["small", "big"]
subjects = ["circle", "square", "star"]
"""
    )
    out = root / "atlas"
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "build", "--config", str(cfg), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = AtlasStore(out)
    ids = store.read_table("images", ["image_id", "source"]).to_pylist()
    return {"out": out, "root": root, "images": images, "store": store, "ids": ids, "labels": read_labels(images)}


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result


def _same_picture(a: Image.Image, b: Image.Image) -> bool:
    """Equal up to float rounding (a batch of another size sums in another order)."""
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    return bool(diff.max() <= 3 and diff.mean() < 0.5)


def _frames(png: Path) -> int:
    width = Image.open(png).size[0]
    return (width - 4) // (TILE + 4)


def test_steer_by_direction_writes_a_strip_with_the_image_in_the_middle(atlas, tmp_path):
    image_id = atlas["ids"][0]["image_id"]
    out = tmp_path / "steer.png"
    r = cli(
        "steer",
        "--atlas",
        str(atlas["out"]),
        "--image",
        str(image_id),
        "--direction",
        "red-blue",
        "--frames",
        "5",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    assert (
        "steered by direction red-blue at scales -1, -0.5, 0, 0.5, 1" in r.stdout
        and f"wrote {out}: 5 frames" in r.stdout
    )
    assert _frames(out) == 5

    session = ModelSession(atlas["store"], device="cpu")
    strip = steer(session, image_id, direction="red-blue", scales=[-1.0, 0.0, 1.0])
    z = session.embedding_of(image_id)
    np.testing.assert_array_equal(strip.embeddings[1], z)  # scale 0 is the stored embedding itself
    d = session.direction("red-blue")
    np.testing.assert_allclose(strip.embeddings[2] - z, np.linalg.norm(z) * d, rtol=1e-4, atol=1e-5)
    # one seed for every frame: the middle frame is the plain render of the image
    assert _same_picture(strip.images[1], session.render(z[None])[0])


def test_steer_a_feature_and_a_concept_of_an_image_file(atlas, tmp_path):
    source = atlas["ids"][1]["source"]
    path = atlas["images"] / source
    session = ModelSession(atlas["store"], device="cpu")
    z = session.embedding_of(str(path))
    np.testing.assert_allclose(
        z, session.embedding_of(atlas["ids"][1]["image_id"]), atol=1e-4
    )  # same image, same embedding
    feature = int(np.argmax(session.sae.encode(__import__("torch").tensor(z)[None])[0].detach().numpy()))
    out = tmp_path / "f.png"
    r = cli(
        "steer",
        "-a",
        str(atlas["out"]),
        "-i",
        str(path),
        "--feature",
        str(feature),
        "--scales",
        "-1,0,2",
        "-o",
        str(out),
    )
    assert r.exit_code == 0, r.output
    assert f"feature {feature}" in r.stdout and _frames(out) == 3
    out = tmp_path / "c.png"
    r = cli("steer", "-a", str(atlas["out"]), "-i", str(path), "--concept", "0", "--frames", "3", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "concept 0" in r.stdout and _frames(out) == 3


def test_concepts_lists_the_concepts_and_removes_each(atlas, tmp_path):
    image_id = atlas["ids"][2]["image_id"]
    out = tmp_path / "concepts.png"
    r = cli("concepts", "-a", str(atlas["out"]), "-i", str(image_id), "--min-share", "0.15", "-o", str(out))
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("concept ")]
    assert lines and _frames(out) == 1 + len(lines)
    shares = [float(ln.split(":")[1].split("%")[0]) for ln in lines]
    assert all(s >= 15.0 for s in shares) and sum(shares) == pytest.approx(100, abs=0.5)

    session = ModelSession(atlas["store"], device="cpu")
    found, strip = concepts_strip(session, image_id, min_share=0.15)
    assert len(found) == len(lines) and strip.labels[0] == "original"
    np.testing.assert_array_equal(strip.embeddings[0], session.embedding_of(image_id))


@pytest.mark.parametrize(
    "how",
    [
        ["--to", "OTHER", "--method", "slerp"],
        ["--to", "OTHER", "--method", "normalized_linear"],
        [
            "--text",
            "a small red circle in the middle on a gray background",
            "--text0",
            "a small blue circle in the middle on a gray background",
        ],
        ["--noise-to-seed", "7", "--method", "slerp"],
    ],
)
def test_interpolate(atlas, tmp_path, how):
    image_id, other = atlas["ids"][3]["image_id"], atlas["ids"][4]["image_id"]
    out = tmp_path / "i.png"
    args = [str(other) if a == "OTHER" else a for a in how]
    r = cli("interpolate", "-a", str(atlas["out"]), "-i", str(image_id), *args, "--frames", "4", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert _frames(out) == 4 and "wrote" in r.stdout


def test_interpolation_endpoints_are_the_two_images(atlas):
    session = ModelSession(atlas["store"], device="cpu")
    a, b = atlas["ids"][5]["image_id"], atlas["ids"][6]["image_id"]
    strip = interpolate_strip(session, a, to=b, frames=3)
    np.testing.assert_allclose(strip.embeddings[0], session.embedding_of(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(strip.embeddings[-1], session.embedding_of(b), rtol=1e-5, atol=1e-5)
    noise = interpolate_strip(session, a, noise_to_seed=3, frames=3)
    assert _same_picture(noise.images[0], session.render(session.embedding_of(a)[None], seed=0)[0])
    assert not _same_picture(noise.images[0], noise.images[-1])


@pytest.mark.parametrize(
    "args, message",
    [
        (["steer", "--image", "12345", "--direction", "red-blue"], "image_id 12345: not in the atlas"),
        (["steer", "--image", "CORRUPT", "--direction", "red-blue"], "not a readable PNG, JPEG or WEBP image"),
        (["steer", "--image", "MISSING", "--direction", "red-blue"], "neither an image file nor an image_id"),
        (
            ["steer", "--image", "FIRST", "--direction", "happy-sad"],
            "direction 'happy-sad': not in this atlas (known: red-blue)",
        ),
        (["steer", "--image", "FIRST", "--feature", "99999"], "feature 99999: no such feature"),
        (["steer", "--image", "FIRST"], "give exactly one of --direction, --feature, --concept, --concept-along"),
        (["concepts", "--image", "FIRST", "--min-share", "0"], "min_share = 0.0"),
        (["interpolate", "--image", "FIRST", "--to", "FIRST", "--method", "cubic"], "interpolation method 'cubic'"),
    ],
)
def test_bad_input_is_one_error_line(atlas, tmp_path, args, message):
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    subst = {"CORRUPT": str(corrupt), "MISSING": str(tmp_path / "nope.png"), "FIRST": str(atlas["ids"][0]["image_id"])}
    args = [subst.get(a, a) for a in args]
    r = cli(args[0], "--atlas", str(atlas["out"]), *args[1:], "--out", str(tmp_path / "x.png"))
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "x.png").exists()


def test_bench_render_writes_its_json(tmp_path):
    r = cli(
        "bench",
        "render",
        "--out",
        str(tmp_path),
        "--n-icons",
        "2",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--repeat",
        "1",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    import json

    data = json.loads((tmp_path / "render.json").read_text())
    for key in ("batched_icons_per_s", "per_feature_icons_per_s", "ratio", "bare_ratio", "device"):
        assert key in data
    proj = data["projection_60k"]
    assert "measured on one H100" in proj["basis"]  # no GPU here: the stated H100 basis
    assert proj["one_gpu_hours"] == pytest.approx(60_000 / proj["icons_per_s_per_gpu"] / 3600)
    assert proj["eight_gpu_hours"] == pytest.approx(proj["one_gpu_hours"] / 8)


# ---- the colour demos with the committed toy decoder, judged by the toy CLIP ------------------------------


def _colour(embedder, images: list[Image.Image], scene: Scene) -> list[str]:
    """Zero-shot colour of each rendered image: the caption of `scene` with each colour, best cosine wins."""
    from dataclasses import replace

    from atlas.toyworld.world import COLOURS

    colours = list(COLOURS)
    z_img = embedder.encode_images(images)
    z_img /= np.linalg.norm(z_img, axis=1, keepdims=True)
    z_txt = embedder.encode_texts([replace(scene, colour=c).caption() for c in colours])
    z_txt /= np.linalg.norm(z_txt, axis=1, keepdims=True)
    return [colours[i] for i in (z_img @ z_txt.T).argmax(axis=1)]


def _blue_objects_drawn_blue(atlas, n: int):
    """A toy-decoder session on the atlas, and up to `n` (scene, embedding) of blue objects it redraws blue."""
    cfg = ModelSession(atlas["store"], device="cpu").cfg
    models = cfg.models.model_copy(update={"decoder": "builtin:toy-decoder"})
    render = cfg.render.model_copy(update={"steps": 25, "guidance_scale": GUIDANCE})
    session = ModelSession(atlas["store"], cfg.model_copy(update={"models": models, "render": render}), device="cpu")
    found = []
    for row in atlas["ids"]:
        scene = Scene(**atlas["labels"][row["source"]], centres=())
        if scene.colour != "blue":
            continue
        z = session.embedding_of(row["image_id"])
        if _colour(session.embedder, session.render(z[None]), scene) == ["blue"]:  # else no test of steering
            found.append((scene, z))
        if len(found) == n:
            break
    assert found, "the toy decoder redrew none of the blue objects blue"
    return session, found


def test_red_minus_blue_turns_a_blue_object_red(atlas):
    session, blue = _blue_objects_drawn_blue(atlas, 2)
    for scene, z in blue:
        strip = steer(session, z, direction="red-blue", scales=[0.0, 1.0, 2.0, 3.0])
        colours = _colour(session.embedder, strip.images, scene)
        assert colours[0] == "blue" and "red" in colours[1:], colours


@pytest.mark.xfail(
    reason="known weakness: the dense toy SAEs spread an object's colour over many features, so the "
    "concept most aligned with red-blue holds only part of it and removing it leaves the object blue"
)
def test_removing_the_colour_concept_changes_the_colour(atlas):
    session, blue = _blue_objects_drawn_blue(atlas, 2)
    for scene, z in blue:
        removed = steer(session, z, concept_along="red-blue", scales=[0.0, -1.0], min_share=0.1)
        after = _colour(session.embedder, removed.images, scene)
        assert after[0] == "blue" and after[1] != "blue", (after, removed.notes)
