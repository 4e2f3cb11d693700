import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from atlas.errors import AtlasError
from atlas.images import decode_image, image_id_for
from atlas.store import AtlasStore, table_from_rows
from schemas import FORMAT_VERSION


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "img, fmt",
    [
        (Image.new("CMYK", (40, 30), (0, 255, 0, 0)), "JPEG"),
        (Image.new("L", (40, 30), 200), "PNG"),
        (Image.new("RGBA", (40, 30), (255, 0, 0, 128)), "PNG"),
        (Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)), "PNG"),
        (Image.new("P", (40, 30)), "PNG"),
    ],
)
def test_odd_modes_are_converted(img, fmt):
    d = decode_image(_encode(img, fmt), 16, 8, 10**8)
    assert d.pixels.shape == (16, 16, 3) and d.pixels.dtype == np.uint8
    assert (d.width, d.height) == (40, 30)
    assert Image.open(io.BytesIO(d.thumbnail)).format == "JPEG"


def test_alpha_is_composited_on_white():
    d = decode_image(_encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0))), 8, 8, 10**8)
    assert d.pixels.min() >= 250


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"not an image at all", "not a decodable image"),
        (_encode(Image.new("RGB", (64, 64)))[:60], "not a decodable image"),
    ],
)
def test_bad_bytes_give_a_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        decode_image(data, 16, 8, 10**8)


def test_decompression_bomb_is_refused_before_decoding():
    big = _encode(Image.new("L", (3000, 3000)))  # small file, 9 Mpx
    with pytest.raises(ValueError, match="too large"):
        decode_image(big, 16, 8, max_pixels=1_000_000)


def test_image_folder_source_errors_and_listing(tmp_path):
    import json

    from atlas.sources import check_source, plan_shards

    with pytest.raises(AtlasError, match="no such folder"):
        check_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(AtlasError, match="no images"):
        check_source(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("b.PNG", "sub/a.jpg", "sub/c.webp", "x.gif"):
        (tmp_path / "d" / name).write_bytes(b"x")
    assert json.loads(plan_shards(str(tmp_path / "d"), 100)[0].spec) == ["b.PNG", "sub/a.jpg", "sub/c.webp"]


def test_image_ids_are_stable_and_distinct():
    assert image_id_for("a/b.png") == image_id_for("a/b.png")
    ids = {image_id_for(f"{i}.png") for i in range(10000)}
    assert len(ids) == 10000


def test_write_part_is_atomic_and_checks_the_contract(tmp_path):
    store = AtlasStore(tmp_path)
    good = table_from_rows("errors", {"stage": ["embed"], "source": ["a.png"], "error": ["empty file"]})
    store.write_part("errors", "embed-part-00000", good)
    assert store.count_rows("errors") == 1
    # no temp files left: the part and its record (rows, bytes, sha256) only
    names = sorted(p.name for p in store.table_dir("errors").iterdir())
    assert names == [".embed-part-00000.parquet.sum", "embed-part-00000.parquet"]
    record = json.loads((store.table_dir("errors") / ".embed-part-00000.parquet.sum").read_text())
    blob = (store.table_dir("errors") / "embed-part-00000.parquet").read_bytes()
    assert record == {"rows": 1, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    wrong = pa.table({"stage": [1], "source": ["a"], "error": ["b"]})
    with pytest.raises(TypeError, match="does not match the contract"):
        store.write_part("errors", "embed-part-00001", wrong)
    assert not store.has_part("errors", "embed-part-00001")


def test_newer_atlas_format_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "stages": {}}))
    with pytest.raises(AtlasError, match="newer atlas format"):
        AtlasStore(tmp_path).manifest()
