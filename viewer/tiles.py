"""Tiles six to a row, in the order given: features (icon, id, label, one number, an Open button) and images
(thumbnail, one number, caption, a button to the image's page)."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

COLUMNS = 6
_MIME = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp", b"GIF8": "image/gif"}


def data_uri(image: bytes) -> str:
    """Image bytes (PNG, JPEG, WEBP or GIF, by their magic bytes) as a data: URI, which st.image sends as it
    is. Given bytes, st.image opens each image with PIL, re-encodes what is not the format it picks (icons:
    PNG to JPEG) and files it with its media manager under one lock: half of a grid page's server time."""
    mime = next((m for magic, m in _MIME.items() if image.startswith(magic)), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"


def feature_tiles(tiles: pd.DataFrame, notes: Sequence[str], key: str, on_open: Callable[[int], None]) -> None:
    """One tile per row of `tiles` (feature_id, label, icon) with `notes[i]` under it; the Open button of
    tile i has the key f"{key}-{feature_id}" and calls `on_open(feature_id)`."""
    rows = list(zip(tiles.itertuples(), notes, strict=True))
    for start in range(0, len(rows), COLUMNS):
        for col, (tile, note) in zip(st.columns(COLUMNS), rows[start : start + COLUMNS], strict=False):
            with col.container(border=True):
                if tile.icon is not None:
                    st.image(data_uri(tile.icon), width="stretch")
                st.markdown(f"**#{tile.feature_id}** · {tile.label or '–'}  \n{note}")
                if st.button("Open", key=f"{key}-{tile.feature_id}", width="stretch"):
                    on_open(int(tile.feature_id))


def image_tiles(
    images: pd.DataFrame,
    notes: Sequence[str],
    key: str,
    on_pick: Callable[[int], None] | None = None,
    button: str = "Image",
) -> None:
    """One tile per row of `images` (image_id, source, caption, thumbnail) with `notes[i]` under it; its
    button (key f"{key}-{image_id}") calls `on_pick(image_id)`, by default opening the image's page."""
    rows = list(zip(images.itertuples(), notes, strict=True))
    for start in range(0, len(rows), COLUMNS):
        for col, (tile, note) in zip(st.columns(COLUMNS), rows[start : start + COLUMNS], strict=False):
            with col.container(border=True):
                st.image(data_uri(tile.thumbnail), width="stretch")
                name = tile.caption if isinstance(tile.caption, str) and tile.caption else tile.source
                st.caption(" · ".join(t for t in (note, name) if t))
                if st.button(button, key=f"{key}-{tile.image_id}", width="stretch"):
                    (on_pick or _open_image)(int(tile.image_id))


def _open_image(image_id: int) -> None:
    st.switch_page("views/image.py", query_params={"image": str(image_id)})


def image_strip(images: pd.DataFrame, notes: Sequence[str], size: int = 112) -> None:
    """`images` (image_id, thumbnail, caption, source) as one element: thumbnails in rows, `notes[i]` under
    each, the caption as its tooltip, each a link to its image page. One element where tiles are four per
    image (a page of 40 images as tiles spends most of its server time sending elements)."""
    cells = []
    for r, note in zip(images.itertuples(), notes, strict=True):
        name = r.caption if isinstance(r.caption, str) and r.caption else r.source
        cells.append(
            f'<a href="./image?image={int(r.image_id)}" target="_self" title="{html.escape(str(name))}" '
            f'style="text-decoration:none;color:inherit;width:{size}px">'
            f'<img src="{data_uri(r.thumbnail)}" width="{size}" height="{size}" '
            'style="object-fit:cover;border-radius:4px;display:block">'
            f'<div style="font-size:0.8em;opacity:0.7;text-align:center">{html.escape(note)}</div></a>'
        )
    st.markdown(f'<div style="display:flex;flex-wrap:wrap;gap:8px">{"".join(cells)}</div>', unsafe_allow_html=True)
