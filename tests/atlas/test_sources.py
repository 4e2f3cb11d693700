"""Image sources (WebDataset shards, Parquet with bytes or paths, folders): stable keys and ids, captions,
limits; and the embed job over them with planted bad images, a simulated crash and a rerun: every good image
exactly once, every bad one in `errors`."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from repo import ROOT

from atlas.config import AtlasConfig
from atlas.images import image_id_for
from atlas.sources import plan_shards, read_all, source_kind
from atlas.store import AtlasStore


def _img(mode="RGB", size=(40, 30), fmt="JPEG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, size=size[::-1], dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, size=(*size[::-1], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


BOMB = _img(size=(1200, 1000), fmt="PNG")  # > data.max_image_pixels = 1,000,000 in the configs below
BAD = {"empty": b"", "garbage": b"definitely not an image", "truncated": _img(seed=9)[:80], "bomb": BOMB}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(folder: Path) -> tuple[set[str], set[str]]:
    """3 shards as img2dataset writes them; returns (good source keys, bad source keys)."""
    folder.mkdir(parents=True)
    good, bad = set(), set()
    odd = [("CMYK", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG")]
    for s in range(3):
        name = f"{s:05d}.tar"
        with tarfile.open(folder / name, "w") as tar:
            for i in range(6):
                key = f"{s:05d}{i:04d}"
                mode, fmt = odd[i % 4] if i < 4 else ("RGB", "JPEG")
                ext = "png" if fmt == "PNG" else "jpg"
                _add(tar, f"{key}.{ext}", _img(mode, fmt=fmt, seed=s * 10 + i))
                if i % 2:
                    _add(tar, f"{key}.txt", f"caption {key}".encode())
                else:
                    _add(tar, f"{key}.json", json.dumps({"caption": f"json caption {key}", "url": "x"}).encode())
                good.add(f"{name}/{key}")
            kind = list(BAD)[s]
            _add(tar, f"bad{s}.jpg", BAD[kind])
            bad.add(f"{name}/bad{s}")
            _add(tar, f"noimage{s}.txt", b"a caption without its image")
            bad.add(f"{name}/noimage{s}")
            if s == 0:
                _add(tar, "bomb.png", BAD["bomb"])
                bad.add(f"{name}/bomb")
    return good, bad


def write_parquet(folder: Path) -> tuple[set[str], set[str]]:
    """2 files with image bytes + captions (LAION-style) and 1 with relative paths."""
    folder.mkdir(parents=True)
    good, bad = set(), set()
    for f in range(2):
        images = [_img(seed=100 + f * 10 + i) for i in range(5)] + [BAD["garbage"], None, BAD["bomb"]]
        name = f"laion-{f}.parquet"
        pq.write_table(
            pa.table(
                {"jpg": pa.array(images, pa.binary()), "caption": [f"c{f}-{i}" for i in range(8)], "url": ["u"] * 8}
            ),
            folder / name,
        )
        good |= {f"{name}#{i}" for i in range(5)}
        bad |= {f"{name}#{i}" for i in range(5, 8)}
    (folder / "imgs").mkdir()
    for i in range(3):
        (folder / "imgs" / f"{i}.jpg").write_bytes(_img(seed=200 + i))
    pq.write_table(
        pa.table(
            {
                "key": ["a", "b", "c", "d"],
                "path": ["imgs/0.jpg", "imgs/1.jpg", "imgs/2.jpg", "imgs/missing.jpg"],
                "text": list("wxyz"),
            }
        ),
        folder / "paths.parquet",
    )
    good |= {"paths.parquet#a", "paths.parquet#b", "paths.parquet#c"}
    bad.add("paths.parquet#d")
    return good, bad


def test_webdataset_shards_keys_captions_and_limit(tmp_path):
    good, bad = write_webdataset(tmp_path / "wds")
    uri = str(tmp_path / "wds")
    assert source_kind(uri)[0] == "webdataset"
    shards = plan_shards(uri, part_size=100)
    assert [s.n_items for s in shards] == [9, 8, 8]
    items = list(read_all(uri, shards))
    assert {i.source for i in items} == good | bad
    by_key = {i.source: i for i in items}
    assert by_key["00000.tar/000000001"].caption == "caption 000000001"
    assert by_key["00000.tar/000000000"].caption == "json caption 000000000"
    assert by_key["00001.tar/noimage1"].error.startswith("sample has no image")
    # the same source gives the same keys (so the same image ids) on every read
    assert [i.source for i in read_all(uri, plan_shards(uri, 100))] == [i.source for i in items]
    limited = plan_shards(uri, part_size=100, limit=10)
    assert [s.n_items for s in limited] == [9, 1] and len(list(read_all(uri, limited))) == 10


def test_parquet_sources_with_bytes_and_paths(tmp_path):
    good, bad = write_parquet(tmp_path / "pq")
    uri = f"parquet:{tmp_path / 'pq'}"
    items = {i.source: i for i in read_all(uri, plan_shards(uri, 100))}
    assert set(items) == good | bad
    assert items["laion-1.parquet#2"].caption == "c1-2" and items["paths.parquet#b"].caption == "x"
    assert items["paths.parquet#a"].data == (tmp_path / "pq" / "imgs" / "0.jpg").read_bytes()
    assert "unreadable" in items["paths.parquet#d"].error
    # the same files through a pyarrow filesystem URI
    fs_uri = f"parquet:file://{tmp_path / 'pq'}"
    items_uri = {i.source for i in read_all(fs_uri, plan_shards(fs_uri, 100))}
    assert items_uri == set(items)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.parametrize("kind", ["webdataset", "parquet"])
def test_embed_resumes_after_a_crash_with_every_image_once(tmp_path, ray_local, kind):
    from jobs.embed import run_embed

    writer = write_webdataset if kind == "webdataset" else write_parquet
    good, bad = writer(tmp_path / "src")
    cfg = AtlasConfig.model_validate(
        {
            "data": {"source": f"{kind}:{tmp_path / 'src'}", "max_image_pixels": 1_000_000},
            "embed": {"batch_size": 4},
            "compute": {"num_actors": 1, "actor_cpus": 0.5, "decode_cpus": 0.5},
        }
    )
    store = AtlasStore(tmp_path / "atlas")
    first = run_embed(cfg, store)
    assert first["parts_resumed"] == 0
    # Simulate a kill: part-00001 died between its images and embeddings writes, part-00002 before any write.
    store.part_path("embeddings", "part-00001").unlink()
    for table, part in (("images", "part-00002"), ("embeddings", "part-00002"), ("errors", "embed-part-00002")):
        store.part_path(table, part).unlink(missing_ok=True)
    second = run_embed(cfg, store)
    assert second["parts_resumed"] == first["parts"] - 2

    images = store.read_table("images").to_pylist()
    ids = store.read_table("embeddings").column("image_id").to_pylist()
    assert sorted(ids) == sorted(image_id_for(g) for g in good)  # every good image exactly once
    assert sorted(r["image_id"] for r in images) == sorted(ids)
    assert all(r["thumbnail"] and r["width"] > 0 for r in images)
    errors = store.read_table("errors").to_pylist()
    assert sorted(e["source"] for e in errors) == sorted(bad)  # every bad one, once, with its reason
    reasons = " | ".join(e["error"] for e in errors)
    assert "decompression bomb" in reasons or "too large" in reasons
    assert "not a decodable image" in reasons
    emb = store.read_table("embeddings").column("embedding").to_numpy(zero_copy_only=False)
    assert np.isfinite(np.stack(emb)).all()


def test_production_clip_has_the_kandinsky_prior_encoder_shape():
    """Kandinsky 2.2's prior image encoder: CLIPVisionModelWithProjection, hidden 1664, 48 layers, patch 14,
    projection 1280 (NOTES.md). open_clip's ViT-bigG-14 has that shape, laion2b_s39b_b160k is its weights' tag,
    and the production config names that pair."""
    import tomllib

    import open_clip

    cfg = open_clip.get_model_config("ViT-bigG-14")
    v = cfg["vision_cfg"]
    assert (v["width"], v["layers"], v["patch_size"], cfg["embed_dim"]) == (1664, 48, 14, 1280)
    assert "laion2b_s39b_b160k" in open_clip.list_pretrained_tags_by_model("ViT-bigG-14")
    prod = tomllib.loads((ROOT / "jobs/configs/production.toml").read_text())
    assert prod["models"]["clip"] == "open_clip:ViT-bigG-14/laion2b_s39b_b160k"


def test_embeddings_are_stored_raw_as_the_model_returns_them():
    """No L2 normalisation anywhere between the model and the embeddings table (the decoder takes raw embeds)."""
    from atlas.embed import decode_items, embed_batch, split_outputs
    from atlas.models.clip import clip_image_size, load_embedder
    from atlas.sources import RawImage

    embedder = load_embedder("builtin:toy-clip", "cpu")
    size = clip_image_size("builtin:toy-clip")
    batch = decode_items([RawImage(f"k{i}", _img(seed=i), None) for i in range(4)], size, 16, 10**8)
    emb = embed_batch(embedder, batch)
    direct = embedder.encode_pixels(batch["pixels"])
    np.testing.assert_array_equal(emb, direct)
    rows = pa.table(
        {
            k: pa.array(list(batch[k]) if batch[k].dtype == object else batch[k])
            for k in ("source", "image_id", "caption", "width", "height", "error", "thumbnail")
        }
    )
    rows = rows.append_column("embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]))
    _, embeddings, _ = split_outputs(rows, emb.shape[1])
    stored = np.stack(embeddings.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(stored, direct)
    assert not np.allclose(np.linalg.norm(stored, axis=1), 1.0)
