"""The viewer's pages (navigation, the atlas in the sidebar): the script `viewer/server.py` serves per session."""

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
    st.Page("views/home.py", title="Summary", icon=":material/home:", default=True),
    st.Page("views/grid.py", title="Feature grid", icon=":material/grid_view:"),
    st.Page("views/feature.py", title="Feature", icon=":material/search:"),
    st.Page("views/map.py", title="Feature map", icon=":material/scatter_plot:"),
    st.Page("views/image.py", title="Image", icon=":material/image:"),
    st.Page("views/lists.py", title="Lists", icon=":material/list:"),
    st.Page("views/search.py", title="Search", icon=":material/manage_search:"),
    st.Page("views/directions.py", title="Directions", icon=":material/swap_horiz:"),
    st.Page("views/diff.py", title="Diff", icon=":material/compare:"),
    st.Page("views/sql.py", title="SQL", icon=":material/database:"),
]
try:  # the image explorer (pick or upload an image, scale its concepts, render) needs viewer/steer.py
    import viewer.steer  # noqa: F401

    pages.append(st.Page("views/explorer.py", title="Image explorer", icon=":material/tune:", url_path="explorer"))
except ImportError:
    pass
page = st.navigation(pages)
st.sidebar.caption(f"Atlas: `{store.root}`")
try:
    page.run()
except AtlasError as e:
    st.error(str(e))
