"""The viewer's entry point: `streamlit run viewer/app.py -- --atlas DIR` (or with $ATLAS_DIR set)."""

from __future__ import annotations

import streamlit as st

from atlas.errors import AtlasError
from viewer import data

st.set_page_config(page_title="CLIP Feature Atlas", layout="wide")

try:
    store = data.current_store()
except AtlasError as e:
    st.error(str(e))
    st.stop()

pages = [
    st.Page("pages/home.py", title="Summary", icon=":material/home:", default=True),
    st.Page("pages/grid.py", title="Feature grid", icon=":material/grid_view:"),
    st.Page("pages/feature.py", title="Feature", icon=":material/search:"),
    st.Page("pages/search.py", title="Search", icon=":material/manage_search:"),
    st.Page("pages/directions.py", title="Directions", icon=":material/swap_horiz:"),
    st.Page("pages/diff.py", title="Diff", icon=":material/compare:"),
    st.Page("pages/sql.py", title="SQL", icon=":material/database:"),
]
try:  # the image explorer (pick or upload an image, scale its concepts, render) lives in viewer/steer.py
    from viewer.steer import image_explorer_page
except ImportError:
    image_explorer_page = None
if image_explorer_page is not None:
    pages.append(st.Page(image_explorer_page, title="Image explorer", icon=":material/tune:", url_path="explorer"))
page = st.navigation(pages)
st.sidebar.caption(f"Atlas: `{store.root}`")
try:
    page.run()
except AtlasError as e:
    st.error(str(e))
