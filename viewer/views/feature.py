"""One feature (?feature=N): icon, labels, statistics, adding it to a list, activation histogram, top images
(each opens its image page), nearest features, co-occurring features, aligned directions, and a steering
slider (from `viewer.steer`, when it is installed)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from atlas.errors import AtlasError
from viewer import data
from viewer.tiles import data_uri, feature_strip, image_strip, image_strip_html

store = data.current_store()
n_features = data.feature_count(store)
if n_features == 0:
    st.info("No features yet (run `atlas featurize`).")
    st.stop()


def _requested() -> int | None:
    """The feature asked for in the URL (?feature=N), if it is a valid id."""
    try:
        value = int(st.query_params.get("feature", ""))
    except ValueError:
        return None
    return value if 0 <= value < n_features else None


def _to_url() -> None:
    st.query_params["feature"] = str(st.session_state.feature_id)


requested = _requested()
if requested is not None and requested != st.session_state.get("feature_id"):
    st.session_state.feature_id = requested
elif "feature_id" not in st.session_state:
    st.session_state.feature_id = data.first_alive_feature(store)
feature_id = st.number_input(
    "Feature id", min_value=0, max_value=n_features - 1, step=1, key="feature_id", on_change=_to_url
)
st.query_params["feature"] = str(feature_id)

row = data.feature(store, feature_id)
if row is None:
    st.warning(f"Feature {feature_id} is not in the features table.")
    st.stop()

st.title(f"Feature {feature_id}" + (f": {row['label']}" if row["label"] else ""))
left, right = st.columns([1, 3])
with left:
    if row["icon"] is not None:
        st.image(data_uri(row["icon"]), caption=f"icon · fidelity rank {int(row['fidelity_rank'])}", width="stretch")
    else:
        st.caption("no icon for this feature")
with right:
    cols = st.columns(4)
    cols[0].metric("frequency", f"{row['frequency']:.3%}")
    cols[1].metric("max activation", f"{row['max_activation']:.4g}")
    cols[2].metric("activation mass", f"{row['activation_mass']:.4g}")
    cols[3].metric("fidelity rank", "-" if row["icon"] is None else int(row["fidelity_rank"]))
    st.dataframe(pd.DataFrame([{k: v for k, v in row.items() if k != "icon"}]), hide_index=True)

with st.expander("Add to a list"):
    lists = data.feature_lists(store)
    if lists:
        st.caption("lists: " + ", ".join(f"{n} ({len(fl.feature_ids)})" for n, fl in lists.items()))
    list_name = st.text_input("List name (an existing list or a new one)", key="add_list_name", max_chars=80)
    if st.button(f"Add feature {feature_id}", key="add_to_list"):
        members = list(lists[list_name.strip()].feature_ids) if list_name.strip() in lists else []
        try:
            data.save_feature_list(store, list_name, [*members, feature_id])
        except AtlasError as e:
            st.error(str(e))
        else:
            st.page_link(
                "views/lists.py", label=f"Open list {list_name.strip()}", icon=":material/list:",
                query_params={"list": list_name.strip()},
            )  # fmt: skip

labels = data.feature_labels(store, feature_id)
if not labels.empty:
    st.markdown(
        "**Labels** (vocabulary words by CLIP text cosine): "
        + ", ".join(f"{r.word} ({r.score:.2f})" for r in labels.itertuples())
    )
if row["label"]:
    st.page_link(
        "views/search.py", label=f"Search for “{row['label']}”", icon=":material/manage_search:",
        query_params={"q": str(row["label"])},
    )  # fmt: skip

words = data.caption_words(store, feature_id)
scores = data.feature_evaluation(store, feature_id)
if not words.empty or not scores.empty:
    word_col, eval_col = st.columns(2)
    if not words.empty:
        word_col.markdown("**Caption words** over-represented among its images (lift against all captions)")
        word_col.dataframe(words, hide_index=True, width="stretch", column_config={
            "lift": st.column_config.NumberColumn(format="%.2f")})  # fmt: skip
    if not scores.empty:
        eval_col.markdown(
            "**Labelled factors** it predicts best (`atlas eval`: AUROC; probe = the embedding's ceiling)"
        )
        eval_col.dataframe(scores, hide_index=True, width="stretch")


def _bin_width(edges: pd.Series) -> float:
    """The width of the histogram's bins from their left edges (empty bins are missing rows)."""
    steps = edges.diff().dropna()
    return float(steps[steps > 0].min()) if (steps > 0).any() else max(abs(float(edges.iloc[0])) * 0.05, 1e-6)


hist = data.activation_histogram(store, feature_id)
if not hist.empty:
    st.subheader("Activation histogram")
    st.vega_lite_chart(  # a spec by hand: st.bar_chart builds it through altair, a tenth of the page's time
        {
            "data": {"values": hist.assign(end=hist["activation"] + _bin_width(hist["activation"])).to_dict("records")},
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {
                "x": {"field": "activation", "type": "quantitative", "bin": {"binned": True}, "title": "activation"},
                "x2": {"field": "end"},
                "y": {"field": "images", "type": "quantitative"},
            },
            "height": 200,
        },
        width="stretch",
    )

top = data.top_images(store, feature_id)
st.subheader(f"Top images ({len(top)})")
if top.empty:
    st.info("No top images for this feature (it never fired).")
else:
    image_strip(top, [f"#{r.rank} · {r.value:.3g}" for r in top.itertuples()])

samples = data.quantile_samples(store, feature_id)
if not samples.empty:
    bins = int(samples["bin"].max())
    st.subheader("Across the activation range")
    st.caption(
        f"images sampled uniformly from those it fires on, in {bins} equal-count bins by activation "
        "(strongest bin first): what it does between the top images and zero"
    )
    rows = []  # every bin in one element
    for b, shown in sorted(samples.groupby("bin"), key=lambda g: -int(g[0])):
        lo, hi = shown["value"].min(), shown["value"].max()
        shown = shown.head(8)  # a row per bin
        rows.append(
            f'<p style="margin:0.6em 0 0.2em"><b>quantile bin {int(b)} of {bins}</b> · '
            f"activation {lo:.3g} – {hi:.3g}</p>"
            + image_strip_html(shown, [f"{v:.3g}" for v in shown["value"]], size=96, name=f"bin-{int(b)}")
        )
    st.markdown("".join(rows), unsafe_allow_html=True)


st.subheader("Nearest features (decoder direction cosine)")
if store.index_dir.joinpath("features.faiss").exists():
    near = data.search_call(store, "nearest_features", feature_id, 6).to_pandas()
    tiles = data.features_by_id(store, tuple(int(f) for f in near["feature_id"]))
    feature_strip(tiles, [f"cos {v:.3f}" for v in near["score"]], "near")
else:
    st.info("No feature index yet (run `atlas index`).")

st.subheader("Co-occurring features")
st.caption("images on which both fire, over every image; the partners kept are the most frequent and the most specific")
order = st.radio(
    "Rank partners by",
    data.COOCCURRENCE_ORDERS,
    format_func={"together": "images together", "jaccard": "Jaccard", "pmi": "PMI"}.get,
    horizontal=True,
    key="cooccurrence_order",
)
partners = data.cooccurring(store, feature_id, order)
if partners.empty:
    st.caption("no co-occurrence table yet (run `atlas index`), or this feature fires alone")
else:
    tiles = partners.rename(columns={"other_id": "feature_id"})
    notes = [f"{r.together:,} together · J {r.jaccard:.3f} · PMI {r.pmi:.2f}" for r in partners.itertuples()]
    feature_strip(tiles, notes, "cooc")

st.subheader("Aligned directions")
dirs = data.directions(store)
direction = (
    data.search_call(store, "direction_of", feature_id) if store.index_dir.joinpath("features.faiss").exists() else None
)
if dirs.empty or direction is None:
    st.caption("no contrastive directions in this atlas (run `atlas directions`)")
else:
    import numpy as np

    vectors = np.stack([np.asarray(v, dtype=np.float32) for v in dirs["vector"]])
    cos = vectors @ direction / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    aligned = dirs[["name", "positive", "negative"]].assign(cosine=cos).sort_values("cosine", key=abs, ascending=False)
    st.dataframe(aligned, hide_index=True, key="aligned_directions")

try:
    from viewer.steer import steering_panel
except ImportError:
    steering_panel = None
if steering_panel is not None:
    st.subheader("Steering")
    steering_panel(store, feature_id)
