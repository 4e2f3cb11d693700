"""A grid of feature icons with labels, one page at a time (only the shown page is read from the atlas),
sorted and filtered by frequency, activation mass, label text and alive."""

from __future__ import annotations

import math

import streamlit as st

from viewer import data
from viewer.tiles import data_uri

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
filters = st.columns(3)
label = filters[0].text_input("Label contains", key="grid_label", max_chars=100, on_change=_first_page)
min_frequency = filters[1].number_input(
    "Min frequency",
    min_value=0.0,
    max_value=1.0,
    value=0.0,
    step=0.001,
    format="%.4f",
    key="grid_min_freq",
    on_change=_first_page,
)
min_mass = filters[2].number_input(
    "Min activation mass", min_value=0.0, value=0.0, key="grid_min_mass", on_change=_first_page
)
flt = data.GridFilter(alive_only=alive_only, min_frequency=min_frequency, min_mass=min_mass, label=label)

total = data.filtered_count(store, flt)
if total == 0:
    st.info("No features match (run `atlas featurize`, or loosen the filters).")
    st.stop()
pages = math.ceil(total / page_size)
if st.session_state.get("grid_page", 1) > pages:
    st.session_state.grid_page = 1
page = controls[3].number_input("Page", min_value=1, max_value=pages, step=1, key="grid_page")
st.caption(f"{total} features, page {page} of {pages}")

rows = data.feature_page(store, sort, flt, page_size, (page - 1) * page_size)
for start in range(0, len(rows), COLUMNS):
    for col, tile in zip(st.columns(COLUMNS), rows.iloc[start : start + COLUMNS].itertuples(), strict=False):
        with col.container(border=True):
            if tile.icon is not None:
                st.image(data_uri(tile.icon), width="stretch")
            else:
                st.caption("no icon" if tile.alive else "dead feature")
            st.markdown(f"**#{tile.feature_id}** · {tile.label or '–'}  \nfreq {tile.frequency:.3%}")
            if st.button("Open", key=f"open-{tile.feature_id}", width="stretch"):
                st.switch_page("views/feature.py", query_params={"feature": str(tile.feature_id)})
