"""The feature map: every alive feature at its UMAP position (decoder directions, cosine), coloured by
frequency or by a label match; hover shows the label and icon (fetched by URL from the server's icon route,
one per hover), a click shows the feature's card and opens its page."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from viewer import data
from viewer.tiles import data_uri

SVG_MAX_POINTS = 2000  # more points are drawn on a canvas (Streamlit's own rule, which misses a chart's datasets)

store = data.current_store()
st.title("Feature map")
points = data.feature_map(store)
if points.empty:
    st.info("No feature map yet (run `atlas index`).")
    st.stop()


def _requested() -> int | None:
    """The feature of the card (?feature=N), if it is an integer."""
    try:
        return int(st.query_params.get("feature", ""))
    except ValueError:
        return None


st.caption(
    f"{len(points):,} alive features, placed by UMAP of their decoder directions (cosine): neighbours on the map "
    "write similar directions into the embedding. Hover for the label and icon; click a point for its card."
)

controls = st.columns([1, 2])
colour = controls[0].radio("Colour by", ("frequency", "label"), horizontal=True, key="map_colour")
match = controls[1].text_input("Label contains", key="map_label", max_chars=100, disabled=colour != "label")

shown = points.assign(
    log10_frequency=np.log10(np.maximum(points["frequency"].to_numpy(dtype=float), 1e-9)),
    label=points["label"].fillna("–"),
)
if colour == "label" and match.strip():
    shown["match"] = shown["label"].str.contains(match.strip(), case=False, regex=False)
    encode = alt.Color("match:N", scale=alt.Scale(domain=[True, False], range=["#d62728", "#c7c7c7"]), title="match")
    st.caption(f"{int(shown['match'].sum()):,} features whose label contains “{match.strip()}”")
else:
    encode = alt.Color("log10_frequency:Q", scale=alt.Scale(scheme="viridis"), title="log10 frequency")

columns = ["feature_id", "x", "y", "label", "log10_frequency", *(["match"] if "match" in shown else [])]
# Streamlit's vega runs in CSP mode, where every expression is interpreted for every point: what the chart
# computes per point is most of its draw time in Chromium (CDP profile, 50,563 points). So the icon URL is a
# column of `data.feature_map` (a calculate transform in the browser took 0.8 s), the tooltip formats
# nothing, and there is no ARIA description (which formats every field of every point) nor the filter of
# invalid values (there are none).
tooltip = [alt.Tooltip("feature_id:N", title="feature"), alt.Tooltip("label:N")]
if store.parts("icons"):
    # vega's tooltip draws the field titled "image" as an image: the browser fetches only the icons hovered
    columns.append("icon")
    tooltip.append(alt.Tooltip("icon:N", title="image"))
picked = alt.selection_point(name="picked", fields=["feature_id"], on="click", empty=False)
chart = (
    alt.Chart(shown[columns])
    .mark_circle(size=14, opacity=0.8, aria=False)
    .encode(
        x=alt.X("x:Q", axis=None),
        y=alt.Y("y:Q", axis=None),
        color=encode,
        tooltip=tooltip,
    )
    .add_params(picked)
    .properties(height=640)
    .configure_mark(invalid=None)
)
if len(shown) > SVG_MAX_POINTS:  # as Streamlit does for inline data (measured: no faster to draw here)
    chart = chart.properties(usermeta={"embedOptions": {"renderer": "canvas"}})
left, right = st.columns([3, 1])
with left:
    event = st.altair_chart(chart, on_select="rerun", selection_mode="picked", key="feature_map", width="stretch")
picked_ids = [int(p["feature_id"]) for p in (event.selection.get("picked") or []) if "feature_id" in p]
if picked_ids:
    st.query_params["feature"] = str(picked_ids[0])  # the URL reopens the map on the picked feature
focus = _requested()
with right:
    card = data.features_by_id(store, (focus,)).iloc[0] if focus is not None else None
    if card is None or pd.isna(card.frequency):
        st.caption("click a point to see its feature here")
    else:
        if card.icon is not None:
            st.image(data_uri(card.icon), width="stretch")
        st.markdown(f"**#{focus}** · {card.label or '–'}  \nfreq {card.frequency:.3%}")
        st.page_link(
            "views/feature.py", label=f"Open feature {focus}", icon=":material/search:",
            query_params={"feature": str(focus)},
        )  # fmt: skip
