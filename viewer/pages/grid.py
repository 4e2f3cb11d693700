"""A grid of feature icons, one page at a time (only the shown page is read from the atlas)."""

from __future__ import annotations

import math

import streamlit as st

from viewer import data

COLUMNS = 6
PAGE_SIZES = (12, 24, 48, 96)

store = data.current_store()
st.title("Feature grid")


def _first_page() -> None:
    st.session_state.grid_page = 1


controls = st.columns(4)
sort = controls[0].selectbox("Sort by", list(data.SORTS), key="grid_sort", on_change=_first_page)
page_size = controls[1].selectbox("Page size", PAGE_SIZES, index=1, key="grid_page_size", on_change=_first_page)
alive_only = controls[2].checkbox("Alive only", value=True, key="grid_alive", on_change=_first_page)

total = data.feature_count(store, alive_only)
if total == 0:
    st.info("No features to show (run `atlas featurize`).")
    st.stop()
pages = math.ceil(total / page_size)
page = controls[3].number_input("Page", min_value=1, max_value=pages, step=1, key="grid_page")
st.caption(f"{total} features, page {page} of {pages}")

rows = data.feature_page(store, sort, alive_only, page_size, (page - 1) * page_size)
for start in range(0, len(rows), COLUMNS):
    for col, tile in zip(st.columns(COLUMNS), rows.iloc[start : start + COLUMNS].itertuples(), strict=False):
        with col.container(border=True):
            if tile.icon is not None:
                st.image(tile.icon, width="stretch")
            else:
                st.caption("no icon" if tile.alive else "dead feature")
            st.markdown(f"**#{tile.feature_id}** · freq {tile.frequency:.3%}")
            if st.button("Open", key=f"open-{tile.feature_id}", width="stretch"):
                st.switch_page("pages/feature.py", query_params={"feature": str(tile.feature_id)})
