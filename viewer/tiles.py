"""Features and images in the order given, as linked cards in one element each (`feature_strip`,
`image_strip`), or as image tiles with a button that calls back (`image_tiles`, for picking)."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

COLUMNS = 6
_MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp", b"GIF8": "image/gif"}


ICONS_PATH = "/icons"  # the server's icon route (viewer/server.py): ICONS_PATH/<feature_id>.png


def data_uri(image: bytes) -> str:
    """Image bytes (PNG, JPEG, WEBP or GIF, by their magic bytes) as a data: URI, which st.image sends as it
    is. Given bytes, st.image opens each image with PIL, re-encodes what is not the format it picks (icons:
    PNG to JPEG) and files it with its media manager under one lock: half of a grid page's server time."""
    mime = next((m for magic, m in _MIME.items() if image.startswith(magic)), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def feature_strip(tiles: pd.DataFrame, notes: Sequence[str], name: str, size: int | None = None) -> None:
    """One card per row of `tiles` (feature_id, label, icon; `alive` if present) with `notes[i]` under it, each a
    link to its feature page, all in one element (`data-strip="{name}"`): six to a row across the page, or
    `size` px wide. One element where a tile of widgets is four, and under load a page's server time goes to
    sending elements."""
    cells = []
    for tile, note in zip(tiles.itertuples(), notes, strict=True):
        if tile.icon is not None:
            picture = (
                f'<img src="{data_uri(tile.icon)}" width="100%" '
                'style="width:100%;height:auto;aspect-ratio:1;object-fit:cover;display:block;border-radius:4px">'
            )
        else:
            missing = "no icon" if getattr(tile, "alive", True) else "dead feature"
            picture = (
                '<div style="width:100%;aspect-ratio:1;display:flex;align-items:center;justify-content:center;'
                f'opacity:0.6;font-size:0.8em">{missing}</div>'
            )
        label = html.escape(str(tile.label)) if isinstance(tile.label, str) and tile.label else "–"
        cells.append(
            f'<a href="./feature?feature={int(tile.feature_id)}" target="_self" '
            'style="text-decoration:none;color:inherit;border:1px solid rgba(128,128,128,0.3);border-radius:8px;'
            f'padding:6px;{"" if size is None else f"width:{size}px;"}">{picture}'
            f'<div style="font-size:0.9em"><b>#{int(tile.feature_id)}</b> · {label}</div>'
            f'<div style="font-size:0.8em;opacity:0.7">{html.escape(note)}</div></a>'
        )
    layout = f"display:grid;grid-template-columns:repeat({COLUMNS},minmax(0,1fr))" if size is None else ""
    st.markdown(_strip_div(name, cells, layout), unsafe_allow_html=True)


def image_tiles(
    images: pd.DataFrame,
    notes: Sequence[str],
    key: str,
    on_pick: Callable[[int], None],
    button: str = "Pick",
) -> None:
    """One tile per row of `images` (image_id, source, caption, thumbnail) with `notes[i]` under it; its
    button (key f"{key}-{image_id}") calls `on_pick(image_id)`."""
    rows = list(zip(images.itertuples(), notes, strict=True))
    for start in range(0, len(rows), COLUMNS):
        for col, (tile, note) in zip(st.columns(COLUMNS), rows[start : start + COLUMNS], strict=False):
            with col.container(border=True):
                st.image(data_uri(tile.thumbnail), width="stretch")
                name = tile.caption if isinstance(tile.caption, str) and tile.caption else tile.source
                st.caption(" · ".join(t for t in (note, name) if t))
                if st.button(button, key=f"{key}-{tile.image_id}", width="stretch"):
                    on_pick(int(tile.image_id))


def image_strip(images: pd.DataFrame, notes: Sequence[str], size: int = 112, name: str = "") -> None:
    """`images` (image_id, thumbnail, caption, source) as one element: thumbnails in rows, `notes[i]` under
    each, the caption as its tooltip, each a link to its image page. One element where tiles are four per
    image (a page of 40 images as tiles spends most of its server time sending elements)."""
    st.markdown(image_strip_html(images, notes, size, name), unsafe_allow_html=True)


def image_strip_html(images: pd.DataFrame, notes: Sequence[str], size: int = 112, name: str = "") -> str:
    """The HTML of `image_strip`, for several strips in one element."""
    cells = []
    for r, note in zip(images.itertuples(), notes, strict=True):
        title = r.caption if isinstance(r.caption, str) and r.caption else r.source
        cells.append(
            f'<a href="./image?image={int(r.image_id)}" target="_self" title="{html.escape(str(title))}" '
            f'style="text-decoration:none;color:inherit;width:{size}px">'
            f'<img src="{data_uri(r.thumbnail)}" width="{size}" height="{size}" '
            'style="object-fit:cover;border-radius:4px;display:block">'
            f'<div style="font-size:0.8em;opacity:0.7;text-align:center">{html.escape(note)}</div></a>'
        )
    return _strip_div(name, cells)


def _strip_div(name: str, cells: Sequence[str], layout: str = "") -> str:
    """Cards in one div named `name` (`data-strip`, how tests and the browser test find a strip); they wrap
    in a row unless `layout` (CSS) says otherwise."""
    style = layout or "display:flex;flex-wrap:wrap"
    return f'<div data-strip="{html.escape(name)}" style="{style};gap:8px">{"".join(cells)}</div>'
