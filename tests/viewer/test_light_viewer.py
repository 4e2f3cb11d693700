"""The viewer's light pages (Summary, Feature grid, Feature) open without importing torch or diffusers: the
models load only when a search, steering or generation action asks for them. Each page runs in a fresh
interpreter (Streamlit's AppTest on the small atlas of `test_viewer`), which then reports the heavy modules
it imported. faiss is needed by the Feature page's nearest features; Summary and the grid do without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from repo import ROOT
from test_viewer import atlas  # noqa: F401 (the fixture: a tiny complete atlas with a feature index)

HEAVY = ("torch", "diffusers", "faiss")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from streamlit.testing.v1 import AppTest

    page = sys.argv[1]
    at = AppTest.from_file(sys.argv[2], default_timeout=120).run()
    if page != "home":
        at.switch_page(f"views/{page}.py").run()
    errors = [str(e.value) for e in at.exception] + [e.value for e in at.error]
    print(json.dumps({"errors": errors, "titles": [t.value for t in at.title],
                      "heavy": [m for m in sys.argv[3:] if m in sys.modules]}))
    """
)


def _open_page(store, page: str) -> dict:
    env = {**os.environ, "ATLAS_DIR": str(store.root), "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, page, str(ROOT / "viewer" / "app.py"), *HEAVY],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("page, allowed", [("home", ()), ("grid", ()), ("feature", ("faiss",))])
def test_light_pages_import_neither_torch_nor_diffusers(atlas, page, allowed):  # noqa: F811
    result = _open_page(atlas, page)
    assert not result["errors"], result
    assert result["titles"], result  # the page drew something
    heavy = [m for m in result["heavy"] if m not in allowed]
    assert not heavy, f"opening the {page} page imported {heavy}"
