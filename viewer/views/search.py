"""Search: text -> features and images through the atlas's CLIP; an uploaded image -> the features that
fire on it. The CLIP, SAE and indexes load once per server (`data.searcher`)."""

from __future__ import annotations

import streamlit as st

from atlas.errors import AtlasError
from atlas.uploads import UPLOADS, decode_upload
from viewer import data
from viewer.tiles import feature_strip, image_strip

K = 12
store = data.current_store()
st.title("Search")


def _feature_results(hits, score_name: str, key: str) -> None:
    tiles = data.features_by_id(store, tuple(int(f) for f in hits["feature_id"]))
    feature_strip(tiles, [f"{score_name} {v:.3f}" for v in hits[score_name]], key)


def _to_url() -> None:
    """Typing a query puts it in the URL (?q=...), before the page reruns."""
    if st.session_state.search_text.strip():
        st.query_params["q"] = st.session_state.search_text.strip()
    else:
        st.query_params.pop("q", None)


text_tab, image_tab = st.tabs(["Text", "Image"])
with text_tab:
    if st.session_state.get("search_text", "").strip() != st.query_params.get("q", ""):
        st.session_state.search_text = st.query_params.get("q", "")[:300]  # a search's URL reopens it
    text = st.text_input("Words", key="search_text", max_chars=300, placeholder="e.g. red", on_change=_to_url)
    if text.strip():
        try:
            features = data.search_call(store, "features_for_text", text, K).to_pandas()
            images = data.search_call(store, "images_for_text", text, K).to_pandas()
        except AtlasError as e:
            st.error(str(e))
        else:
            st.subheader(f"Features for “{text.strip()}”")
            if features.empty:
                st.info("No alive features.")
            else:
                _feature_results(features, "score", "text-feature")
            st.subheader(f"Images for “{text.strip()}”")
            shown = data.images_by_id(store, tuple(int(i) for i in images["image_id"]))
            if not shown.empty:
                image_strip(shown, [f"{s:.3f}" for s in images["score"]], name="text-image")

with image_tab:
    upload = st.file_uploader(
        f"An image ({UPLOADS.describe()})",
        type=UPLOADS.extensions,
        key="search_upload",
    )
    if upload is not None:
        try:
            UPLOADS.check_size(upload.size, upload.name)  # before reading it
            image = decode_upload(upload.getvalue(), upload.name)
            hits = data.search_call(store, "features_for_image", image, K).to_pandas()
        except AtlasError as e:
            st.error(str(e))
        else:
            st.image(image, caption="your image", width=160)
            st.subheader("Features that fire on it")
            if hits.empty:
                st.info("No feature fires on this image.")
            else:
                _feature_results(hits, "activation", "image-feature")
