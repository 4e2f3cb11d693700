"""Contrastive text directions (`atlas directions`): each direction's prompts and the SAE features whose
decoder directions align with it best."""

from __future__ import annotations

import streamlit as st

from viewer import data
from viewer.tiles import feature_strip

store = data.current_store()
st.title("Directions")
dirs = data.directions(store)
if dirs.empty:
    st.info("No directions in this atlas (run `atlas directions`).")
    st.stop()

st.dataframe(dirs[["name", "positive", "negative", "n_pairs"]], hide_index=True, key="directions_table")
name = st.selectbox("Direction", list(dirs["name"]), key="direction_name")
row = dirs[dirs["name"] == name].iloc[0]
st.subheader(f"{row['positive']} − {row['negative']}")
top = list(row["top_features"]) if row["top_features"] is not None else []
tiles = data.features_by_id(store, tuple(int(t["feature_id"]) for t in top))
feature_strip(tiles, [f"cos {t['cosine']:.3f}" for t in top], "dir")
