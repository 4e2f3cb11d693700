"""Tiles six to a row, in the order given: features (icon, id, label, one number, an Open button) and images
(thumbnail, one number, caption, a button to the image's page)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import streamlit as st

COLUMNS = 6


def feature_tiles(tiles: pd.DataFrame, notes: Sequence[str], key: str, on_open: Callable[[int], None]) -> None:
    """One tile per row of `tiles` (feature_id, label, icon) with `notes[i]` under it; the Open button of
    tile i has the key f"{key}-{feature_id}" and calls `on_open(feature_id)`."""
    rows = list(zip(tiles.itertuples(), notes, strict=True))
    for start in range(0, len(rows), COLUMNS):
        for col, (tile, note) in zip(st.columns(COLUMNS), rows[start : start + COLUMNS], strict=False):
            with col.container(border=True):
                if tile.icon is not None:
                    st.image(tile.icon, width="stretch", output_format="PNG")
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
                st.image(tile.thumbnail, width="stretch")
                name = tile.caption if isinstance(tile.caption, str) and tile.caption else tile.source
                st.caption(" · ".join(t for t in (note, name) if t))
                if st.button(button, key=f"{key}-{tile.image_id}", width="stretch"):
                    (on_pick or _open_image)(int(tile.image_id))


def _open_image(image_id: int) -> None:
    st.switch_page("views/image.py", query_params={"image": str(image_id)})
