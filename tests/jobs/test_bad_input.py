"""Bad input never corrupts an atlas: per-item problems (corrupt, truncated, zero-byte, non-image files, a
decompression bomb) become `errors` rows while the good images are embedded; problems that stop the run (a
missing source, an output folder that cannot be written, an atlas of a newer format, a broken manifest, a
bad config) give one `error:` line and exit status 2, and leave an existing atlas byte-for-byte unchanged
and readable. Everything goes through the real CLI in a subprocess."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from atlas.builtin import SHIPPED
from atlas.store import AtlasStore
from atlas.toyworld import write_world
from schemas import FORMAT_VERSION

N_GOOD = 12


def atlas_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, timeout=600)


def one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb: a few hundred bytes that
    would decode to gigabytes)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), width (4), height (4), ...
    assert data[ihdr + 4 : ihdr + 8] == b"IHDR"
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    body = bytes(data[ihdr + 4 : ihdr + 8 + 13])
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", zlib.crc32(body))
    return bytes(data)


BAD_FILES = {
    "zero-bytes.png": (b"", "empty file"),
    "corrupt.jpg": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "not a decodable image"),
    "notes.jpg": (b"shopping list: eggs, milk\n" * 20, "not a decodable image"),
    "bomb.png": (png_bomb(100_000, 100_000), "decompression bomb refused"),  # PIL's own limit
    "large.png": (png_bomb(9_000, 9_000), "image too large (9000x9000 pixels > data.max_image_pixels"),
}


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> dict:
    """An atlas embedded from a folder of good images and every kind of bad file."""
    root = tmp_path_factory.mktemp("bad-input")
    images = write_world(root / "world", N_GOOD, 32, seed=5)
    for name, (data, _) in BAD_FILES.items():
        (images / name).write_bytes(data)
    good = sorted(images.glob("*.png"))[0].read_bytes()
    (images / "truncated.png").write_bytes(good[: len(good) // 2])
    (images / "gone.png").symlink_to(root / "no-such-image.png")  # a broken symbolic link
    (images / "loop.jpg").symlink_to("loop.jpg")  # one that points at itself
    cfg = root / "atlas.toml"
    cfg.write_text(f'[data]\nsource = "{images}"\n[embed]\nbatch_size = 8\npart_size = 8\n')
    out = root / "atlas"
    proc = atlas_cli("embed", "--atlas", str(out), "--config", str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"out": out, "cfg": cfg, "root": root, "images": images, "stdout": proc.stdout}


def test_bad_files_become_error_rows_and_good_images_are_embedded(atlas):
    store = AtlasStore(atlas["out"])
    errors = {r["source"]: r for r in store.read_table("errors").to_pylist()}
    expected = {name: message for name, (_, message) in BAD_FILES.items()} | {
        "truncated.png": "not a decodable image",
        "gone.png": f"broken symbolic link (to '{atlas['root'] / 'no-such-image.png'}')",
        "loop.jpg": "broken symbolic link (to 'loop.jpg')",
    }
    assert set(errors) == set(expected)
    for name, message in expected.items():
        assert errors[name]["stage"] == "embed" and message in errors[name]["error"], errors[name]
        assert "\n" not in errors[name]["error"]
    sources = store.read_table("images", ["source"]).column("source").to_pylist()
    assert len(sources) == N_GOOD == len(set(sources)) and not set(sources) & set(expected)
    assert store.count_rows("embeddings") == N_GOOD
    listed = N_GOOD + len(expected)
    assert f"{listed} listed, {N_GOOD} embedded, {len(expected)} skipped (see errors)" in atlas["stdout"]


def _cases(atlas: dict, tmp: Path) -> dict[str, tuple[list[str], str]]:
    out = str(atlas["out"])
    missing = tmp / "missing.toml"
    missing.write_text(f'[data]\nsource = "{tmp / "no-such-folder"}"\n')
    typo = tmp / "typo.toml"
    typo.write_text(atlas["cfg"].read_text() + "[sae]\nexpansion = 4\n")
    a_file = tmp / "a-file"
    a_file.write_text("not a folder")
    no_decoder = tmp / "no-decoder.toml"
    no_decoder.write_text(atlas["cfg"].read_text() + '[models]\ndecoder = "builtin:no-such-decoder"\n')
    no_index = tmp / "no-index"  # a decoder folder with its unet but no model_index.json
    shutil.copytree(Path(SHIPPED) / "toy-decoder" / "unet", no_index / "unet")
    models = {
        "arch": 'clip = "open_clip:ViT-B-23/laion2b_s34b_b79k"',
        "tag": 'clip = "open_clip:ViT-B-32/laion2b_s34b_b97k"',
        "index": f'decoder = "{no_index}"',
    }
    for name, line in models.items():
        (tmp / f"{name}.toml").write_text(atlas["cfg"].read_text() + f"[models]\n{line}\n")
    return {
        "mistyped open_clip architecture": (
            ["build", "--config", str(tmp / "arch.toml"), "--out", out],
            "open_clip has no architecture 'ViT-B-23' (did you mean ViT-B-32",
        ),
        "mistyped open_clip tag": (
            ["build", "--config", str(tmp / "tag.toml"), "--out", out],
            "open_clip knows no pretrained tag 'laion2b_s34b_b97k' for ViT-B-32",
        ),
        "decoder folder without model_index.json": (
            ["build", "--config", str(tmp / "index.toml"), "--out", out],
            "not a diffusers pipeline folder (no model_index.json)",
        ),
        "unknown decoder": (
            ["build", "--config", str(no_decoder), "--out", out],
            "unknown built-in model 'builtin:no-such-decoder'",
        ),
        "missing source": (["build", "--config", str(missing), "--out", out], "no such folder"),
        "unknown config key": (["build", "--config", str(typo), "--out", out], "unknown key 'sae.expansion'"),
        "output inside a file": (
            ["build", "--config", str(atlas["cfg"]), "--out", f"{a_file}/atlas"],
            "cannot write the atlas here",
        ),
        "output is a file": (
            ["embed", "--config", str(atlas["cfg"]), "--atlas", str(a_file)],
            "cannot write the atlas here",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing source",
        "unknown config key",
        "unknown decoder",
        "output inside a file",
        "output is a file",
        "mistyped open_clip architecture",
        "mistyped open_clip tag",
        "decoder folder without model_index.json",
    ],
)
def test_a_run_that_cannot_go_on_leaves_the_atlas_unchanged(atlas, tmp_path, case):
    before = checksums(atlas["out"])
    args, message = _cases(atlas, tmp_path)[case]
    one_error_line(atlas_cli(*args), message)
    assert checksums(atlas["out"]) == before
    info = atlas_cli("info", "--atlas", str(atlas["out"]))
    assert info.returncode == 0 and f"embeddings {N_GOOD}" in info.stdout


@pytest.mark.parametrize("command", ["build", "embed", "info", "sql"])
def test_an_atlas_of_a_newer_format_is_refused_and_left_alone(atlas, tmp_path, command):
    newer = tmp_path / "newer"
    shutil.copytree(atlas["out"], newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (newer / "manifest.json").write_text(json.dumps(manifest))
    before = checksums(newer)
    args = {
        "build": ["build", "--config", str(atlas["cfg"]), "--out", str(newer)],
        "embed": ["embed", "--atlas", str(newer)],
        "info": ["info", "--atlas", str(newer)],
        "sql": ["sql", "--atlas", str(newer), "SELECT 1"],
    }[command]
    one_error_line(atlas_cli(*args), f"written by a newer atlas format (v{FORMAT_VERSION + 1})")
    assert checksums(newer) == before


def test_a_broken_manifest_is_one_line_and_nothing_is_written(atlas, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(atlas["out"], broken)
    text = (broken / "manifest.json").read_text()
    (broken / "manifest.json").write_text(text[: len(text) // 2])
    before = checksums(broken)
    one_error_line(atlas_cli("build", "--config", str(atlas["cfg"]), "--out", str(broken)), "unreadable manifest")
    assert checksums(broken) == before


def test_a_parquet_source_without_an_image_column_is_one_line_and_the_atlas_is_unchanged(atlas, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"url": ["http://example.com/a.jpg"], "caption": ["a cat"]}), tmp_path / "meta.parquet")
    cfg = tmp_path / "parquet.toml"
    cfg.write_text(f'[data]\nsource = "parquet:{tmp_path / "meta.parquet"}"\n')
    before = checksums(atlas["out"])
    one_error_line(
        atlas_cli("embed", "--config", str(cfg), "--atlas", str(atlas["out"])), "meta.parquet: no image column"
    )
    assert checksums(atlas["out"]) == before


def test_an_imported_sae_of_the_wrong_width_is_one_line_and_the_atlas_is_unchanged(atlas, tmp_path):
    import torch
    from safetensors.torch import save_file

    d_in, n = 8, 16  # the toy CLIP's embeddings are 64-d
    sae = tmp_path / "sae.safetensors"
    save_file({"encoder.weight": torch.randn(n, d_in), "encoder.bias": torch.zeros(n),
               "decoder.weight": torch.randn(d_in, n), "decoder.bias": torch.zeros(d_in)}, str(sae))  # fmt: skip
    before = checksums(atlas["out"])
    one_error_line(atlas_cli("import-sae", str(sae), "--atlas", str(atlas["out"])), "8-d inputs")
    assert checksums(atlas["out"]) == before


def test_an_open_clip_model_not_in_the_cache_offline_is_one_line_in_seconds(atlas, tmp_path):
    """With HF_HUB_OFFLINE=1 and an empty Hugging Face cache: refused before Ray starts, in about the time it
    takes to import open_clip (it was 35 s, Ray tracebacks, exit status 1 and embed left "running")."""
    import os
    import time

    (tmp_path / "hf").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_CACHE")}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    cfg = tmp_path / "uncached.toml"
    cfg.write_text(atlas["cfg"].read_text() + '[models]\nclip = "open_clip:ViT-B-32/laion2b_s34b_b79k"\n')
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import jobs.cli, open_clip"], check=True, env=env, timeout=300)
    imports = time.perf_counter() - t0
    before = checksums(atlas["out"])
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "build", "--config", str(cfg), "--out", str(atlas["out"])],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    one_error_line(
        proc,
        "models.clip = 'open_clip:ViT-B-32/laion2b_s34b_b79k': weights not in the local cache "
        f"(hub laion/CLIP-ViT-B-32-laion2B-s34B-b79K in {tmp_path / 'hf' / 'hub'}) and HF_HUB_OFFLINE=1",
    )
    assert seconds < imports + 5, f"{seconds:.1f}s for the refusal, {imports:.1f}s to import the CLI and open_clip"
    assert checksums(atlas["out"]) == before


def test_an_atlas_error_in_an_actor_constructor_is_one_line_and_the_stage_is_recorded_failed(atlas, tmp_path):
    """A CLIP folder whose weights file is corrupt passes the preflight (it does not read weights); the embed
    actor's constructor finds it: one line, exit status 2, no Ray traceback, embed recorded as failed."""
    clip = tmp_path / "corrupt-clip"
    shutil.copytree(Path(SHIPPED) / "toy-clip", clip)
    weights = clip / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    cfg = tmp_path / "corrupt.toml"
    cfg.write_text(atlas["cfg"].read_text() + f'[models]\nclip = "{clip}"\n')
    out = tmp_path / "atlas"
    proc = atlas_cli("embed", "--config", str(cfg), "--atlas", str(out))
    message = f"{clip}: open_clip could not load this model folder (SafetensorError"
    one_error_line(proc, message)
    assert "ActorDiedError" not in proc.stdout + proc.stderr and "UserCodeException" not in proc.stderr
    record = AtlasStore(out).stage("embed")
    assert record["status"] == "failed" and message in record["error"] and record["finished"], record
    info = atlas_cli("info", "--atlas", str(out))
    assert info.returncode == 0 and "embed      failed" in info.stdout and message in info.stdout, info.stdout
