"""Feature tiles (icon, id, label, one number, an Open button), six to a row, in the order given."""

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
                    st.image(tile.icon, width="stretch")
                st.markdown(f"**#{tile.feature_id}** · {tile.label or '–'}  \n{note}")
                if st.button("Open", key=f"{key}-{tile.feature_id}", width="stretch"):
                    on_open(int(tile.feature_id))
