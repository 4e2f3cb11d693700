"""`atlas bench view`: page-render latency of the viewer on a synthetic 80,000-feature atlas, one session and
many concurrent sessions, against a real `streamlit run` server (`atlas view`) on loopback.

Sessions are driven through Streamlit's own websocket protocol (`/_stcore/stream`, the messages a browser
sends): each session connects, then asks for a page (`BackMsg.rerun_script` with the page name and query
string) and the latency is the time until the server reports `script_finished`, i.e. the whole page was
computed and sent. No browser is involved, so the figure is the server's cost, not Chromium's layout time
(the browser test covers real rendering). The feature page is asked for a different random feature each
time (cold queries: labels, histogram, top images, nearest features, co-occurring features), the image page
for a random image (its features, nearest images); the grid shows its first page and the map all its points
(as a visitor first sees them). The bare baseline is the health endpoint (`/_stcore/health`) round trip on the
same server.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlas.caption_words import caption_words_table
from atlas.catalog import build_catalog, connect
from atlas.featurize import FeatureStats, SparseBatch
from atlas.store import AtlasStore, table_from_rows
from atlas.vector_index import FEATURES, IMAGES, build_index

DIM = 64
ICON_PART = 128  # the render stage's default part size: the layout that lets DuckDB skip unread icon files


def _pngs(n: int, size: int, seed: int, fmt: str = "PNG") -> list[bytes]:
    """`n` noise images, PNG (as icons are) or JPEG (as thumbnails are)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def write_synthetic_atlas(
    root: Path, n_features: int, n_images: int = 5000, per_image: int = 40, seed: int = 0
) -> AtlasStore:
    """An atlas with every table the grid and feature pages read, laid out as the stages write it:
    `n_features` features (90% may fire) with 64 px noise icons (about 12 kB, in parts of 128) and labels,
    `n_images` images with thumbnails, `per_image` activations per image, top images, and the FAISS index of
    random decoder directions."""
    from atlas.labels import read_vocabulary

    rng = np.random.default_rng(seed)
    words = np.asarray(read_vocabulary(), dtype=object)
    store = AtlasStore(root)
    image_ids = rng.integers(-(2**62), 2**62, n_images)
    thumbs = _pngs(64, 64, seed, "JPEG")
    captions = [" ".join(words[rng.integers(0, len(words), 6)]) for _ in range(n_images)]  # six vocabulary words
    store.write_part("images", "part-00000", table_from_rows("images", {
        "image_id": image_ids, "source": [f"img/{i}.jpg" for i in range(n_images)],
        "caption": captions, "width": [512] * n_images, "height": [512] * n_images,
        "thumbnail": [thumbs[i % len(thumbs)] for i in range(n_images)],
    }))  # fmt: skip
    store.write_part("embeddings", "part-00000", table_from_rows("embeddings", {
        "image_id": image_ids, "embedding": rng.standard_normal((n_images, DIM), dtype=np.float32),
    }, dim=DIM))  # fmt: skip
    # activations: each image fires `per_image` features, Zipf-like popularity
    popularity = 1.0 / np.arange(1, n_features + 1) ** 0.8
    popularity /= popularity.sum()
    alive_mask = rng.random(n_features) < 0.9
    p = np.where(alive_mask, popularity, 0)
    p /= p.sum()
    drawn = rng.choice(n_features, (n_images, 2 * per_image), p=p).astype(np.int32)
    # a feature fires at most once per image: the first `per_image` distinct draws of each row
    picked = [np.unique(row, return_index=True) for row in drawn]
    feat_rows = [u[np.argsort(first)][:per_image] for u, first in picked]
    n_per_image = np.array([len(r) for r in feat_rows])
    feat = np.concatenate(feat_rows)
    values = rng.gamma(2.0, 1.0, feat.shape).astype(np.float32)
    store.write_part("activations", "part-00000", table_from_rows("activations", {
        "image_id": np.repeat(image_ids, n_per_image), "feature_id": feat, "value": values,
    }))  # fmt: skip
    n_active = np.bincount(feat, minlength=n_features)
    mass = np.bincount(feat, weights=values, minlength=n_features)
    maxv = np.zeros(n_features)
    np.maximum.at(maxv, feat, values)
    alive = n_active > 0
    store.write_part("features", "part-00000", table_from_rows("features", {
        "feature_id": np.arange(n_features, dtype=np.int32), "alive": alive, "frequency": n_active / n_images,
        "mean_activation": np.divide(mass, n_active, out=np.zeros(n_features), where=alive), "max_activation": maxv,
        "activation_mass": mass, "decoder_norm": rng.uniform(0.5, 1.5, n_features), "label": [None] * n_features,
    }))  # fmt: skip
    stats = FeatureStats.empty(n_features, 16)
    rows = torch.from_numpy(np.repeat(np.arange(n_images), n_per_image))
    stats.update_sparse(
        image_ids, SparseBatch(n_images, rows, torch.from_numpy(feat.astype(np.int64)), torch.from_numpy(values))
    )
    store.write_part("top_images", "part-00000", stats.top_images_table())
    store.write_part("quantile_samples", "part-00000", stats.quantile_samples_table(5))
    alive_ids = np.flatnonzero(alive).astype(np.int32)
    icons = _pngs(256, 64, seed + 1)
    for start in range(0, len(alive_ids), ICON_PART):  # parts of 128 icons, as the render stage writes them
        ids = alive_ids[start : start + ICON_PART]
        store.write_part("icons", f"part-{start // ICON_PART:05d}", table_from_rows("icons", {
            "feature_id": ids, "image": [icons[int(i) % len(icons)] for i in ids],
            "feature_scale": np.full(len(ids), 50.0), "seed": ids.astype(np.int64),
            "steps": np.full(len(ids), 12, dtype=np.int32),
            "fidelity_rank": rng.integers(1, 20, len(ids)).astype(np.int32),
            "template": ["gray"] * len(ids), "template_scale": np.full(len(ids), 0.2), "negative": ["zero"] * len(ids),
            "keep_error": np.zeros(len(ids), dtype=bool), "guidance_scale": np.full(len(ids), 4.0),
            "size": np.full(len(ids), 512, dtype=np.int32),
        }))  # fmt: skip
    k = 5
    store.write_part("labels", "part-00000", table_from_rows("labels", {
        "feature_id": np.repeat(alive_ids, k), "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(alive_ids)),
        "word": words[rng.integers(0, len(words), len(alive_ids) * k)].tolist(),
        "score": np.tile(np.linspace(0.3, 0.2, k, dtype=np.float32), len(alive_ids)),
    }))  # fmt: skip
    steps = np.arange(1, 21) * 50
    store.write_part("train_log", "part-00000", table_from_rows("train_log", {
        "step": steps, "samples": steps * 4096, "split": ["train"] * len(steps), "loss": 1 / steps, "mse": 1 / steps,
        "l1": np.full(len(steps), 0.1), "l0": np.full(len(steps), 60.0), "explained_variance": 1 - 1 / np.sqrt(steps),
        "dead_fraction": np.full(len(steps), 0.1),
    }))  # fmt: skip
    # the map's coordinates are drawn at random: the page's cost depends on the number of points, not on
    # where UMAP puts them (tests/atlas/test_feature_map.py checks the layout itself)
    store.write_part("feature_map", "part-00000", table_from_rows("feature_map", {
        "feature_id": alive_ids, "x": rng.standard_normal(len(alive_ids)), "y": rng.standard_normal(len(alive_ids)),
    }))  # fmt: skip
    build_index(
        rng.standard_normal((n_features, DIM), dtype=np.float32), np.arange(n_features), store.index_dir / FEATURES
    )
    build_index(rng.standard_normal((n_images, DIM), dtype=np.float32), image_ids, store.index_dir / IMAGES)
    con = connect(store)
    store.write_part("caption_words", "part-00000", caption_words_table(con))  # the index stage's SQL
    con.close()

    def manifest(m: dict) -> None:
        m["models"] = {"clip": "builtin:random-clip", "decoder": "builtin:random-decoder"}
        m["stages"]["index"] = {"status": "done", "seconds": 0.0, "finished": "synthetic"}

    store.update_manifest(manifest)
    build_catalog(store, DIM)
    return store


# ---- the server and the sessions --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_viewer(store: AtlasStore) -> tuple[subprocess.Popen, str]:
    """`atlas view` on a free loopback port, in its own process group; returns (process, base url)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "view", "--atlas", str(store.root), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop_viewer(proc)
    raise RuntimeError("the viewer did not start within 120 s")


def stop_viewer(proc: subprocess.Popen) -> None:
    """Stop the whole process group (`atlas view` and its streamlit child) and wait until none is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # any member of the group still alive?
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def _render(ws, page: str, query: str) -> float:
    """Ask the session for one page; seconds until the server says the script finished."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    msg = BackMsg()
    msg.rerun_script.query_string = query
    msg.rerun_script.page_name = page
    t0 = time.perf_counter()
    await ws.send(msg.SerializeToString())
    while True:
        fwd = ForwardMsg()
        fwd.ParseFromString(await asyncio.wait_for(ws.recv(), timeout=300))
        if fwd.WhichOneof("type") == "script_finished":
            if fwd.script_finished != ForwardMsg.FINISHED_SUCCESSFULLY:
                raise RuntimeError(f"page {page!r} did not finish cleanly ({fwd.script_finished})")
            return time.perf_counter() - t0
        if fwd.WhichOneof("type") == "delta" and fwd.delta.new_element.WhichOneof("type") == "exception":
            raise RuntimeError(f"page {page!r} raised: {fwd.delta.new_element.exception.message}")


async def _session(url: str, plan: list[tuple[str, str]], out: dict[str, list[float]]) -> None:
    import websockets

    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    async with websockets.connect(ws_url, subprotocols=["streamlit"], origin=url, max_size=2**27) as ws:
        for page, query in plan:
            out[page].append(await _render(ws, page, query))


PAGES = ("grid", "feature", "map", "image")


def _plans(
    n_sessions: int, requests: int, n_features: int, image_ids: np.ndarray, seed: int
) -> list[list[tuple[str, str]]]:
    """Each session's requests: every page `requests` times, a random feature and image each time."""
    rng = np.random.default_rng(seed)
    plans = []
    for _ in range(n_sessions):
        plan = []
        for _ in range(requests):
            plan.append(("grid", ""))
            plan.append(("feature", f"feature={int(rng.integers(0, n_features))}"))
            plan.append(("map", ""))
            plan.append(("image", f"image={int(rng.choice(image_ids))}"))
        plans.append(plan)
    return plans


def _run_sessions(
    url: str, n_sessions: int, requests: int, n_features: int, image_ids: np.ndarray, seed: int
) -> tuple[dict[str, list[float]], float]:
    out: dict[str, list[float]] = {page: [] for page in PAGES}
    plans = _plans(n_sessions, requests, n_features, image_ids, seed)

    async def main() -> None:
        await asyncio.gather(*(_session(url, plan, out) for plan in plans))

    t0 = time.perf_counter()
    asyncio.run(main())
    return out, time.perf_counter() - t0


def _summary(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "mean": float(ms.mean()),
        "n": int(len(ms)),
    }


# the map is drawn: on a canvas (over 2,000 points) that has a size, or as one SVG path per point
_MAP_DRAWN = (
    "n => { const c = document.querySelector('[data-testid=\"stVegaLiteChart\"] canvas');"
    " return (c !== null && c.width > 0) || document.querySelectorAll('.mark-symbol path').length >= n }"
)
_TOOLTIP_SHOWN = "() => document.querySelector('#vg-tooltip-element.visible') !== null"
TOOLTIP_ICON_LOADED = (  # the vega tooltip shows an icon that has loaded (also the browser test's check)
    "() => { const i = document.querySelector('#vg-tooltip-element img');"
    " return i !== null && i.complete && i.naturalWidth > 0 }"
)


def _hover_a_point(page: Any) -> None:
    """Move the mouse over the map's plot until the tooltip of some point shows."""
    box = page.locator('[data-testid="stVegaLiteChart"]').bounding_box()
    if box is None:
        raise RuntimeError("the map has no layout in Chromium")
    for fy in np.linspace(0.2, 0.8, 25):
        for fx in np.linspace(0.2, 0.6, 25):  # the plot's left part: the legend is on its right
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            if page.evaluate(_TOOLTIP_SHOWN):
                return
    raise RuntimeError("no point of the map showed a tooltip under the mouse")


def browser_map_times(url: str, n_points: int, repeats: int = 3) -> dict[str, Any]:
    """In headless Chromium (Playwright), `repeats` times each on a new page: the Summary page until its heading
    shows (the baseline), then the feature map opened from the sidebar until it is drawn, then from the mouse
    move that opens a point's tooltip until the tooltip's icon has loaded."""
    import shutil

    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"skipped": "playwright is not installed (the dev extra)"}
    if chromium is None:
        return {"skipped": "no chromium on PATH"}
    times: dict[str, list[float]] = {"summary page (baseline)": [], "map drawn": [], "hover icon": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            for _ in range(repeats):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.perf_counter()
                page.goto(url)
                page.get_by_role("heading", name="CLIP Feature Atlas").wait_for(timeout=120_000)
                times["summary page (baseline)"].append(time.perf_counter() - t0)
                page.wait_for_timeout(1000)
                t0 = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"] a', has_text="Feature map").click()
                page.wait_for_function(_MAP_DRAWN, arg=n_points, timeout=120_000, polling=50)
                times["map drawn"].append(time.perf_counter() - t0)
                page.wait_for_timeout(500)
                _hover_a_point(page)
                t0 = time.perf_counter()
                page.wait_for_function(TOOLTIP_ICON_LOADED, timeout=30_000, polling=20)
                times["hover icon"].append(time.perf_counter() - t0)
                page.close()
        finally:
            browser.close()
    return {"driver": "headless Chromium (Playwright), a new page each time", "points": n_points} | {
        k: _summary(v) for k, v in times.items()
    }


def run_view_bench(n_features: int, sessions: int, requests: int, root: Path | None = None) -> dict[str, Any]:
    """Build the synthetic atlas, start the viewer, warm it up, then time one session and `sessions`
    concurrent sessions (each asking for every page `requests` times), then the map in Chromium."""
    with tempfile.TemporaryDirectory(prefix="atlas-bench-view-") as tmp:
        t0 = time.perf_counter()
        store = write_synthetic_atlas(Path(root or tmp) / "atlas", n_features)
        build_s = time.perf_counter() - t0
        image_ids = store.read_table("images", ["image_id"]).column("image_id").to_numpy()
        proc, url = start_viewer(store)
        try:
            _run_sessions(url, 1, 1, n_features, image_ids, seed=99)  # warm-up: imports, the connection, indexes
            health = []
            for _ in range(20):
                t = time.perf_counter()
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=10).read()
                health.append(time.perf_counter() - t)
            single, single_s = _run_sessions(url, 1, requests, n_features, image_ids, seed=1)
            many, many_s = _run_sessions(url, sessions, requests, n_features, image_ids, seed=2)
            browser = browser_map_times(url, store.read_table("feature_map", ["feature_id"]).num_rows)
        finally:
            stop_viewer(proc)
    return {
        "features": n_features,
        "sessions": sessions,
        "requests_per_session_and_page": requests,
        "driver": "Streamlit websocket protocol (BackMsg.rerun_script -> ForwardMsg.script_finished), no browser",
        "synthetic_atlas_build_s": build_s,
        "baseline_health_ms": _summary(health),
        "latency_ms": {
            "1 session": {page: _summary(v) for page, v in single.items()},
            f"{sessions} sessions": {page: _summary(v) for page, v in many.items()},
        },
        "pages_per_s": {
            "1 session": len(PAGES) * requests / single_s,
            f"{sessions} sessions": len(PAGES) * requests * sessions / many_s,
        },
        "browser_ms": browser,
    }
