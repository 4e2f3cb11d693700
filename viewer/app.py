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

page = st.navigation(
    [
        st.Page("pages/home.py", title="Summary", icon=":material/home:", default=True),
        st.Page("pages/grid.py", title="Feature grid", icon=":material/grid_view:"),
        st.Page("pages/feature.py", title="Feature", icon=":material/search:"),
    ]
)
st.sidebar.caption(f"Atlas: `{store.root}`")
try:
    page.run()
except AtlasError as e:
    st.error(str(e))
