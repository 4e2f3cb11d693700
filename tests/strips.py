"""Reading the viewer's card strips (viewer.tiles.feature_strip / image_strip) out of an AppTest run."""

from __future__ import annotations

import re

from streamlit.testing.v1 import AppTest

_LINK = re.compile(r'href="\./(\w+)\?(\w+)=(-?\d+)"')


def strip_html(at: AppTest, name: str) -> str:
    """The HTML of the page's strip `name` (its div alone, where one element holds several), or ""."""
    element = next((m.value for m in at.markdown if f'data-strip="{name}"' in m.value), "")
    if not element:
        return ""
    start = element.index(f'<div data-strip="{name}"')
    depth = 0
    for tag in re.finditer(r"<(/?)div\b", element[start:]):  # to the div's own closing tag
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return element[start : start + tag.end()]
    raise AssertionError(f"strip {name}: its div is not closed")


def shown(at: AppTest, name: str) -> list[int]:
    """The ids of the features or images that strip `name` shows, in order, read from its cards' links."""
    return [int(value) for _, _, value in _LINK.findall(strip_html(at, name))]


def follow(at: AppTest, name: str, position: int) -> int:
    """Open the page that card `position` of strip `name` links to, as a browser would (a new URL); its id."""
    page, param, value = _LINK.findall(strip_html(at, name))[position]
    at.query_params.clear()
    at.query_params[param] = value
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return int(value)
