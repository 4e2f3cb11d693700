"""The viewer in a real browser: `atlas view` on a free loopback port, Chromium driven by Playwright opens
every page of a toy-world atlas (its icons drawn by the render stage), hovers a point of the map, clicks
from the grid to a feature, to an image, to the explorer, saves a list and reopens it by its URL, searches
for a word, opens a feature and saves screenshots.

Set-up (done here): Debian's `chromium` (apt-get, when missing and allowed) and pip's `playwright` (the
`dev` extra). Playwright never downloads a browser: it drives /usr/bin/chromium. Skips, saying why, when
either cannot be had."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sae_edits import split_one_feature
from toy_atlas import build_toy_atlas

from jobs.bench_view import TOOLTIP_ICON_LOADED

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def chromium_path() -> str:
    """Debian's chromium, installed with apt-get if it is missing (skips the test if that cannot be done)."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(
            "chromium is not installed and cannot be installed here (needs apt-get as root): "
            "apt-get install -y chromium"
        )
    proc = subprocess.run(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
        shell=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    found = shutil.which("chromium")
    if proc.returncode != 0 or not found:
        pytest.skip(f"could not install chromium with apt-get (exit {proc.returncode}): {proc.stderr.strip()[-200:]}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"the viewer exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the viewer did not answer on {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`atlas view` on a toy-world atlas, on a free loopback port; stopped (its whole process group) after."""
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra) to run the browser test")
    chromium = chromium_path()
    root = tmp_path_factory.mktemp("browser")
    store = build_toy_atlas(root, n_images=300, epochs=10, l1=4.0)
    # the real render stage (toy decoder, ~30 s on 2 cores): every card and the map's hover show its icons
    rendered = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "render", "--atlas", str(store.root)], capture_output=True, text=True
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stdout[-2000:] + rendered.stderr[-2000:]
    split = split_into_diff(store, root)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "view", "--atlas", str(store.root), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        shots = Path(os.environ.get("ATLAS_SCREENSHOTS") or root / "screenshots")  # set it to keep them
        yield {"url": url, "chromium": chromium, "store": store, "shots": shots, "split": split}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def split_into_diff(store, root: Path) -> int:
    """`atlas diff` of the atlas against its SAE with its most frequent feature split in two, written into the
    atlas (the Diff page then shows that split); returns the split feature."""
    from atlas.diff.compare import DiffSettings, diff_sides
    from atlas.diff.report import write_diff
    from atlas.diff.sides import open_atlas_side, open_sae_side

    path, k, _ = split_one_feature(store.root, root)
    a = open_atlas_side(store.root)
    write_diff(store, diff_sides(a, open_sae_side(path, a, root / "work"), DiffSettings(), say=lambda _: None))
    return k


def _settle(page) -> None:
    """Wait until the script run is over (Streamlit's running indicator is gone) and widgets have drawn."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=120_000)
    page.wait_for_timeout(1500)


def test_every_page_search_and_a_feature_in_chromium(server):
    from playwright.sync_api import expect, sync_playwright

    shots: Path = server["shots"]
    shots.mkdir(parents=True, exist_ok=True)
    url = server["url"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=server["chromium"], args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # a shared link is the server's first visit: the entry point (wide layout, titled navigation) runs it
            page.goto(f"{url}/feature?feature=1")
            expect(page.locator("h1").first).to_contain_text("Feature 1", timeout=90_000)
            _settle(page)
            expect(page.locator('[data-testid="stSidebarNav"]')).to_contain_text("Feature grid")
            for path, heading in [("", "CLIP Feature Atlas"), ("grid", "Feature grid"), ("feature", "Feature "),
                                  ("map", "Feature map"), ("image", "Image "), ("lists", "Feature lists"),
                                  ("explorer", "Image explorer"), ("search", "Search"),
                                  ("directions", "Directions"), ("sql", "SQL"), ("diff", "Diff")]:  # fmt: skip
                page.goto(f"{url}/{path}")
                expect(page.locator("h1").first).to_contain_text(heading, timeout=90_000)
                _settle(page)
                assert page.locator('[data-testid="stException"]').count() == 0, path
                assert page.locator('[data-testid="stAppDeployButton"]').count() == 0, path  # client.toolbarMode
                page.screenshot(path=str(shots / f"{path or 'home'}.png"), full_page=True)

            # the map: hovering a point shows its label and its icon, which the server's icon route serves
            page.goto(f"{url}/map")
            point = page.locator(".mark-symbol path").nth(3)
            point.wait_for(timeout=90_000)
            _settle(page)
            point.hover()
            tip = page.locator("#vg-tooltip-element")
            expect(tip).to_be_visible(timeout=10_000)
            page.wait_for_function(TOOLTIP_ICON_LOADED, timeout=10_000)
            src = tip.locator("img").get_attribute("src") or ""
            hovered = int(re.fullmatch(rf"{re.escape(url)}/icons/(\d+)\.png", src).group(1))  # type: ignore[union-attr]
            expect(tip).to_contain_text(f"feature{hovered}")
            icons = server["store"].read_table("icons", ["feature_id", "image"]).to_pylist()
            with urllib.request.urlopen(src, timeout=10) as r:
                assert r.read() == next(row["image"] for row in icons if row["feature_id"] == hovered)
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"{url}/icons/{10**9}.png", timeout=10)
            page.screenshot(path=str(shots / "map-hover.png"))

            # grid -> feature -> image -> explorer, by clicks
            page.goto(f"{url}/grid")
            expect(page.get_by_text("features, page 1 of")).to_be_visible(timeout=90_000)
            _settle(page)
            page.locator('[data-strip="grid"] a[href^="./feature?feature="]').first.click()  # a feature's card
            page.wait_for_url("**/feature?feature=*", timeout=60_000)
            expect(page.get_by_text(re.compile(r"^Top images \("))).to_be_visible(timeout=60_000)
            _settle(page)
            page.locator('a[href^="./image?image="]').first.click()  # a top image
            page.wait_for_url("**/image?image=*", timeout=60_000)
            image_id = page.url.rsplit("=", 1)[1]
            expect(page.locator("h1").first).to_contain_text(f"Image {image_id}", timeout=60_000)
            expect(page.get_by_text("Similar images")).to_be_visible(timeout=60_000)
            _settle(page)
            assert page.get_by_text("concept 0 ·").count() >= 1  # its concepts, from the SAE
            page.screenshot(path=str(shots / f"image-{image_id}.png"), full_page=True)
            page.get_by_role("link", name="Explore its concepts and render").click()
            page.wait_for_url(f"**/explorer?image={image_id}", timeout=60_000)
            expect(page.get_by_text(f"image {image_id}:")).to_be_visible(timeout=90_000)  # its concepts
            _settle(page)
            page.screenshot(path=str(shots / "explorer-image.png"), full_page=True)

            # a list saved from a feature page, reopened from its URL in a new tab
            page.goto(f"{url}/feature?feature=1")
            expect(page.locator("h1").first).to_contain_text("Feature 1", timeout=90_000)
            _settle(page)
            page.get_by_text("Add to a list").click()
            box = page.get_by_label("List name (an existing list or a new one)")
            box.fill("browser picks")
            box.press("Enter")
            _settle(page)
            page.get_by_role("button", name="Add feature 1").click()
            expect(page.get_by_role("link", name="Open list browser picks")).to_be_visible(timeout=60_000)
            reopened = browser.new_page(viewport={"width": 1400, "height": 1000})
            reopened.goto(f"{url}/lists?list=browser+picks")
            expect(reopened.get_by_text("1 features")).to_be_visible(timeout=90_000)
            expect(reopened.get_by_text("#1 ·").first).to_be_visible(timeout=60_000)
            _settle(reopened)
            reopened.screenshot(path=str(shots / "list.png"), full_page=True)

            page.goto(f"{url}/search")
            box = page.get_by_label("Words")
            box.fill("red")
            box.press("Enter")
            expect(page.get_by_text("Features for “red”")).to_be_visible(timeout=120_000)
            found = page.locator('[data-strip="text-feature"] a[href^="./feature?feature="]')
            expect(found.first).to_be_visible(timeout=60_000)
            _settle(page)
            page.screenshot(path=str(shots / "search-red.png"), full_page=True)

            found.first.click()
            page.wait_for_url("**/feature?feature=*", timeout=60_000)
            feature_id = page.url.rsplit("=", 1)[1]
            expect(page.locator("h1").first).to_contain_text(f"Feature {feature_id}", timeout=60_000)
            expect(page.get_by_text(re.compile(r"^Top images \("))).to_be_visible(timeout=60_000)
            _settle(page)
            page.screenshot(path=str(shots / f"feature-{feature_id}.png"), full_page=True)

            k = server["split"]  # the Diff page opens on the split: A's feature beside B's two parts
            page.goto(f"{url}/diff")
            expect(page.get_by_text(f"A #{k}").first).to_be_visible(timeout=90_000)
            expect(page.get_by_text("1 split groups")).to_be_visible(timeout=60_000)
            _settle(page)
            page.screenshot(path=str(shots / "diff-split.png"), full_page=True)
            page.get_by_role("link", name=f"Open A #{k}").click()
            page.wait_for_url(f"**/feature?feature={k}", timeout=60_000)
            expect(page.locator("h1").first).to_contain_text(f"Feature {k}", timeout=60_000)
            assert not errors, errors
        finally:
            browser.close()
    saved = sorted(p.name for p in shots.glob("*.png"))
    assert len(saved) == 18 and all((shots / n).stat().st_size > 5000 for n in saved), saved
