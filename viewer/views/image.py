"""One image (?image=ID): the image, the features that fire on it (icons, activations), its concepts (each
with an icon of the concept alone, rendered on request by the icon method), its nearest images (FAISS), and a
link into the image explorer."""

from __future__ import annotations

import streamlit as st

from atlas.errors import AtlasError
from viewer import data
from viewer.tiles import data_uri, feature_strip, image_strip

SIMILAR = 12
TILES = 12  # strongest active features shown as tiles; the rest in a table
store = data.current_store()


def _requested() -> int | None:
    """The image asked for in the URL (?image=N), if it is an integer."""
    try:
        return int(st.query_params.get("image", ""))
    except ValueError:
        return None


image_id = _requested()
if image_id is None:
    first = data.some_images(store, 1)
    if first.empty:
        st.info("This atlas has no images yet (run `atlas embed`).")
        st.stop()
    image_id = int(first.image_id.iloc[0])
    st.query_params["image"] = str(image_id)
row = data.image(store, image_id)
if row is None:
    st.title("Image")
    st.warning(f"Image {image_id} is not in the images table.")
    st.stop()

st.title(f"Image {image_id}")
left, right = st.columns([1, 3])
with left:
    st.image(data_uri(row["thumbnail"]), caption=row["caption"] or row["source"], width="stretch")
with right:
    st.markdown(f"**source** `{row['source']}`  \n**caption** {row['caption'] or '–'}")
    st.caption(f"{row['width']} × {row['height']} px")
    st.page_link(
        "views/explorer.py", label="Explore its concepts and render", icon=":material/tune:",
        query_params={"image": str(image_id)},
    )  # fmt: skip

active = data.image_features(store, image_id)
st.subheader(f"Active features ({len(active)})")
if active.empty:
    st.caption("no feature fires on this image (or `atlas featurize` has not run)")
else:
    head = active.head(TILES)
    tiles = data.features_by_id(store, tuple(int(f) for f in head["feature_id"]))
    feature_strip(tiles, [f"activation {v:.3g}" for v in head["value"]], "image-feature")
    if len(active) > TILES:
        with st.expander(f"All {len(active)} active features"):
            st.dataframe(
                active.assign(page=[f"/feature?feature={int(f)}" for f in active["feature_id"]]),
                hide_index=True, width="stretch",
                column_config={"page": st.column_config.LinkColumn("page", display_text="open")},
            )  # fmt: skip

st.subheader("Concepts")
st.caption("the active features grouped by decoder direction (spherical k-means), strongest concept first")
concepts = []
if not store.sae_dir.exists():
    st.caption("no SAE in this atlas yet (run `atlas train`)")
else:
    try:
        from atlas.concepts import image_concepts  # torch: the SAE encodes the image's embedding

        session, lock = data.model_session(store)
        with lock:
            concepts = image_concepts(session.sae, session.embedding_of_id(image_id), labels=session.labels)
    except AtlasError as e:
        st.error(str(e))
for c in concepts:
    st.markdown(f"**concept {c.concept_id} · {c.label}** · {c.mass_share:.0%} of the activation mass")
    members = data.features_by_id(store, c.feature_ids[:6])
    feature_strip(members, [f"activation {v:.3g}" for v in c.activations[:6]], f"concept-{c.concept_id}")
if concepts and st.button("Render an icon of each concept", key="concept_icons"):
    from atlas.generation import strip_image
    from atlas.icons import concept_icon_embeddings, template_embedding

    session, lock = data.model_session(store)
    try:
        with lock:
            rc = session.cfg.render
            template = template_embedding(session.embedder, rc.template, rc.template_prompt)
            groups = [(list(c.feature_ids), list(c.activations)) for c in concepts]
            embeds = concept_icon_embeddings(session.sae, template, groups, rc.template_scale, rc.feature_scale)
            icons = session.render(embeds)
    except AtlasError as e:
        st.warning(f"cannot render here: {e}")
    else:
        st.image(strip_image(icons, [c.label for c in concepts], 160), caption="each concept alone, by the icon method")

st.subheader("Similar images")
if store.index_dir.joinpath("images.faiss").exists():
    near = data.search_call(store, "similar_images", image_id, SIMILAR).to_pandas()
    shown = data.images_by_id(store, tuple(int(i) for i in near["image_id"]))
    image_strip(shown, [f"cos {v:.3f}" for v in near["score"]], name="similar")
else:
    st.info("No image index yet (run `atlas index`).")
