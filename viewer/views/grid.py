"""A grid of feature icons with labels, one page at a time (only the shown page is read from the atlas),
sorted and filtered by frequency, activation mass, label text and alive."""

from __future__ import annotations

import math

import streamlit as st

from viewer import data
from viewer.tiles import feature_strip

PAGE_SIZES = (12, 24, 48, 96)

store = data.current_store()
st.title("Feature grid")
# the URL keeps the page state (?sort=&size=&alive=&label=&min_freq=&min_mass=&page=): a feature opens as a
# link, a new page load, and going back must find the same grid page
URL = {"sort": "grid_sort", "size": "grid_page_size", "alive": "grid_alive", "label": "grid_label",
       "min_freq": "grid_min_freq", "min_mass": "grid_min_mass", "page": "grid_page"}  # fmt: skip


def _from_url(param: str, value: str) -> object | None:
    """A URL value as its widget's value, or None where it is not one (a hand-edited URL is ignored)."""
    try:
        if param == "sort":
            return value if value in data.SORTS else None
        if param == "size":
            return int(value) if int(value) in PAGE_SIZES else None
        if param == "alive":
            return {"1": True, "0": False}.get(value)
        if param == "label":
            return value[:100]
        number = int(value) if param == "page" else float(value)
        low, high = (1, math.inf) if param == "page" else (0, 1 if param == "min_freq" else math.inf)
        return number if low <= number <= high else None
    except ValueError:
        return None


DEFAULTS = {"sort": next(iter(data.SORTS)), "size": PAGE_SIZES[1], "alive": True, "label": "", "min_freq": 0.0,
            "min_mass": 0.0, "page": 1}  # fmt: skip
for param, key in URL.items():
    if key not in st.session_state:  # a new session: from the URL, else the default
        value = _from_url(param, st.query_params[param]) if param in st.query_params else None
        st.session_state[key] = DEFAULTS[param] if value is None else value


def _first_page() -> None:
    st.session_state.grid_page = 1


def _to_url() -> None:
    """The widgets' state into the URL, leaving out what is the default."""
    for param, key in URL.items():
        value = st.session_state[key]
        if value == DEFAULTS[param]:
            st.query_params.pop(param, None)
        else:
            st.query_params[param] = ("1" if value else "0") if param == "alive" else str(value)


controls = st.columns(4)
sort = controls[0].selectbox("Sort by", list(data.SORTS), key="grid_sort", on_change=_first_page)
page_size = controls[1].selectbox("Page size", PAGE_SIZES, key="grid_page_size", on_change=_first_page)
alive_only = controls[2].checkbox("Alive only", key="grid_alive", on_change=_first_page)
filters = st.columns(3)
label = filters[0].text_input("Label contains", key="grid_label", max_chars=100, on_change=_first_page)
min_frequency = filters[1].number_input(
    "Min frequency",
    min_value=0.0,
    max_value=1.0,
    step=0.001,
    format="%.4f",
    key="grid_min_freq",
    on_change=_first_page,
)
min_mass = filters[2].number_input("Min activation mass", min_value=0.0, key="grid_min_mass", on_change=_first_page)
flt = data.GridFilter(alive_only=alive_only, min_frequency=min_frequency, min_mass=min_mass, label=label)

total = data.filtered_count(store, flt)
if total == 0:
    _to_url()
    st.info("No features match (run `atlas featurize`, or loosen the filters).")
    st.stop()
pages = math.ceil(total / page_size)
if st.session_state.get("grid_page", 1) > pages:
    st.session_state.grid_page = 1
page = controls[3].number_input("Page", min_value=1, max_value=pages, step=1, key="grid_page")
st.caption(f"{total} features, page {page} of {pages}")

rows = data.feature_page(store, sort, flt, page_size, (page - 1) * page_size)
feature_strip(rows, [f"freq {f:.3%}" for f in rows["frequency"]], "grid")
_to_url()
