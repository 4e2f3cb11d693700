"""Summary of the atlas: models, stages, table sizes and how well the SAE reconstructs."""

from __future__ import annotations

import streamlit as st

from viewer import data

store = data.current_store()
manifest = store.manifest()

st.title("CLIP Feature Atlas")
st.caption(f"Atlas: `{store.root}`")

models = manifest.get("models", {})
if models:
    st.markdown("  \n".join(f"**{role}**: `{name}`" for role, name in models.items()))

st.subheader("Stages")
st.dataframe(data.stages(manifest), hide_index=True)

st.subheader("Tables")
st.dataframe(data.row_counts(store), hide_index=True)

st.subheader("Sparse autoencoder")
holdout = manifest.get("stages", {}).get("train", {}).get("summary", {}).get("holdout")
if holdout:
    st.caption("held-out split")
    cols = st.columns(4)
    cols[0].metric("explained variance", f"{holdout['explained_variance']:.3f}")
    cols[1].metric("L0 (active features per image)", f"{holdout['l0']:.1f}")
    cols[2].metric("MSE", f"{holdout['mse']:.4g}")
    cols[3].metric("dead features", f"{holdout['dead_fraction']:.1%}")
else:
    st.info("The SAE has not been trained yet (run `atlas train`).")

curve = data.train_curve(store)
if not curve.empty:
    st.caption("training curve")
    for col, metric in zip(st.columns(3), ("explained_variance", "l0", "mse"), strict=True):
        with col:
            st.markdown(f"**{metric}**")
            st.line_chart(curve, x="step", y=metric, height=220)

st.subheader("Feature density")
density = data.frequency_histogram(store)
if density.empty:
    st.info("No alive features yet (run `atlas featurize`).")
else:
    st.caption("alive features by log10 of the share of images they fire on")
    st.bar_chart(density, x="log10_frequency", y="features", height=220)

st.subheader("Explore")
links = st.columns(6)
links[0].page_link("views/grid.py", label="Feature grid", icon=":material/grid_view:")
links[1].page_link("views/map.py", label="Feature map", icon=":material/scatter_plot:")
links[2].page_link("views/search.py", label="Search", icon=":material/manage_search:")
links[3].page_link("views/directions.py", label="Directions", icon=":material/swap_horiz:")
links[4].page_link("views/sql.py", label="SQL", icon=":material/database:")
links[5].page_link("views/feature.py", label="A feature", icon=":material/search:")
