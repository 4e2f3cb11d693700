"""Streamlit building blocks for steering: an image explorer page (an image's concepts, each with a slider, and
the steered render) and a per-feature steering panel.

Nothing here loads a model, or imports torch or diffusers, to show a page: the SAE and CLIP load when an
image is explored, the decoder only when the user asks for a render. The models are the atlas's one
`ModelSession` (`viewer.data.model_session`), shared with search.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from atlas.errors import AtlasError
from atlas.session import ModelSession
from atlas.store import AtlasStore
from atlas.uploads import UPLOADS
from viewer import data
from viewer.tiles import image_tiles

_HASH = {AtlasStore: lambda s: str(s.root)}


def generation_session(store: AtlasStore) -> ModelSession:
    """The atlas's model session (models loaded lazily, on CPU unless a GPU is present)."""
    return data.model_session(store)[0]


@st.cache_resource(hash_funcs=_HASH, show_spinner="loading the decoder…")
def _renderer_or_reason(store: AtlasStore) -> tuple[bool, str]:
    """Load the decoder once; (False, why) when it cannot be loaded here."""
    try:
        _ = generation_session(store).renderer
        _ = generation_session(store).zero_embedding
    except AtlasError as e:
        return False, str(e)
    return True, ""


def _default_store() -> AtlasStore:
    return data.current_store()


def _requested_image() -> int | None:
    """The image asked for in the URL (?image=N), if it is an integer."""
    try:
        return int(st.query_params.get("image", ""))
    except ValueError:
        return None


def _choose(image_id: int) -> None:
    st.query_params["image"] = str(image_id)
    st.session_state.explorer_image_id = str(image_id)
    st.rerun()


def _image_picker(store: AtlasStore, session: ModelSession, current: str) -> str:
    """The image_id box, and thumbnails to pick from: the images closest to a text query, else the first
    images of the atlas. Returns the image_id text."""
    text = st.text_input("image_id", value=current, key="explorer_image_id")
    query = st.text_input("find images by text", key="explorer_find", max_chars=300, placeholder="e.g. a red circle")
    if query.strip():
        try:
            hits = data.search_call(store, "images_for_text", query, 12).to_pandas()
        except AtlasError as e:
            st.error(str(e))
            return text
        shown, notes = (
            data.images_by_id(store, tuple(int(i) for i in hits["image_id"])),
            [f"{v:.3f}" for v in hits["score"]],
        )
    else:
        shown = data.some_images(store, 12)
        notes = ["" for _ in range(len(shown))]
    if not shown.empty:
        image_tiles(shown, notes, "explorer-pick", on_pick=_choose, button="Pick")
    return text


def _pick_image(store: AtlasStore, session: ModelSession) -> tuple[str, np.ndarray, bytes | None] | None:
    """An image of the atlas (from the URL, its image_id, or picked by search or from thumbnails) or an
    uploaded file -> (what it is, its embedding, its picture)."""
    source = st.radio("Image", ["from the atlas", "upload"], horizontal=True, key="explorer_source")
    if source == "upload":
        upload = st.file_uploader(f"An image ({UPLOADS.describe()})", type=UPLOADS.extensions, key="explorer_upload")
        if upload is None:
            return None
        UPLOADS.check_size(upload.size, upload.name)  # before reading it
        return upload.name, session.embedding_of_bytes(upload.getvalue(), upload.name), upload.getvalue()
    ids = session.image_ids(1)
    if not ids:
        st.info("This atlas has no embedded images.")
        return None
    requested = _requested_image()
    if requested is not None:
        st.session_state.explorer_image_id = str(requested)
    with st.expander("Pick another image", expanded=requested is None):
        text = _image_picker(store, session, str(ids[0]))
    try:
        image_id = int(text)
    except ValueError:
        st.error(f"{text!r} is not an image_id (an integer)")
        return None
    row = data.image(store, image_id)
    return f"image {image_id}", session.embedding_of_id(image_id), row["thumbnail"] if row else None


def image_explorer_page(store: AtlasStore | None = None) -> None:
    """Pick an image, see its concepts (labels, icons) with a slider each, and render the image with the
    concepts rescaled beside the original."""
    from atlas.concepts import image_concepts  # torch, faiss: this page explores an image
    from atlas.generation import strip_image
    from atlas.steering import edit_activations

    store = store or _default_store()
    session = generation_session(store)
    st.title("Image explorer")
    try:
        picked = _pick_image(store, session)
    except AtlasError as e:
        st.error(str(e))
        return
    if picked is None:
        return
    name, z, picture = picked
    min_share = st.slider(
        "minimum share of activation mass per concept", 0.02, 0.5, 0.1, 0.01, key="explorer_min_share"
    )
    concepts = image_concepts(session.sae, z, min_share=min_share, labels=session.labels)
    if not concepts:
        st.info(f"{name}: no SAE feature is active on this image.")
        return
    st.caption(f"{name}: {len(concepts)} concepts")
    factors: dict[int, float] = {}
    for c in concepts:
        icons_col, slider_col = st.columns([1, 3])
        members = data.features_by_id(store, c.feature_ids[:3])
        with icons_col:
            shown = [b for b in members["icon"] if isinstance(b, bytes)]
            if shown:
                st.image(shown, width=48)
        with slider_col:
            ids = ", ".join(map(str, c.feature_ids[:8]))
            label = f"concept {c.concept_id} · {c.label} · {c.mass_share:.0%} of the mass · features {ids}"
            value = st.slider(label, 0.0, 3.0, 1.0, 0.1, key=f"explorer_concept_{c.concept_id}")
        for f in c.feature_ids:
            factors[f] = value
    edited = edit_activations(session.sae, z, scale={f: v for f, v in factors.items() if v != 1.0})
    if st.button("Render", key="explorer_render"):
        ok, why = _renderer_or_reason(store)
        if not ok:
            st.warning(f"cannot render here: {why}")
            return
        images = session.render(np.stack([z, edited]))
        source_col, render_col = st.columns([1, 2])
        if picture is not None:
            source_col.image(picture, caption=f"{name} (source)", width=192)
        render_col.image(strip_image(images, ["original", "steered"], 192), caption="original · steered (same seed)")


def steering_panel(store: AtlasStore, feature_id: int) -> None:
    """A slider that adds feature `feature_id` to the icon template or to an image of the atlas, and the render."""
    session = generation_session(store)
    st.subheader(f"Steer with feature {feature_id}")
    target = st.radio("onto", ["the icon template", "an image"], horizontal=True, key=f"steer_target_{feature_id}")
    scale = st.slider("scale (x the feature's max activation)", -2.0, 4.0, 1.0, 0.25, key=f"steer_scale_{feature_id}")
    image_id = None
    if target == "an image":
        ids = session.image_ids()
        image_id = st.selectbox("image_id", ids, key=f"steer_image_{feature_id}") if ids else None
    if not st.button("Render", key=f"steer_render_{feature_id}"):
        return
    ok, why = _renderer_or_reason(store)
    if not ok:
        st.info(f"No renderer available here ({why}).")
        return
    from atlas.generation import strip_image  # torch, only once a render is asked for
    from atlas.icons import icon_embeddings, template_embedding
    from atlas.steering import feature_strip

    try:
        unit = session.feature_unit(feature_id)
        if target == "an image" and image_id is not None:
            z = session.embedding_of_id(int(image_id))
            rows = feature_strip(session.sae, z, feature_id, unit, [0.0, scale])
        else:
            rc = session.cfg.render
            t = template_embedding(session.embedder, rc.template, rc.template_prompt)
            base = icon_embeddings(session.sae, t, np.array([feature_id]), rc.template_scale, 0.0, rc.keep_error)[0]
            rows = np.stack(
                [
                    base,
                    icon_embeddings(
                        session.sae, t, np.array([feature_id]), rc.template_scale, max(0.0, scale * unit), rc.keep_error
                    )[0],
                ]
            )
    except AtlasError as e:
        st.error(str(e))
        return
    images = session.render(rows)
    st.image(strip_image(images, ["without", f"{scale:+g}"], 160), caption=f"feature {feature_id} at scale {scale:+g}")
