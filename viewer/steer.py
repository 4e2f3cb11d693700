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


def _pick_image(session: ModelSession) -> tuple[str, np.ndarray] | None:
    """An image_id of the atlas or an uploaded file -> (what it is, its embedding)."""
    source = st.radio("Image", ["from the atlas", "upload"], horizontal=True, key="explorer_source")
    if source == "upload":
        upload = st.file_uploader(f"An image ({UPLOADS.describe()})", type=UPLOADS.extensions, key="explorer_upload")
        if upload is None:
            return None
        UPLOADS.check_size(upload.size, upload.name)  # before reading it
        return upload.name, session.embedding_of_bytes(upload.getvalue(), upload.name)
    ids = session.image_ids()
    if not ids:
        st.info("This atlas has no embedded images.")
        return None
    text = st.text_input("image_id", value=str(ids[0]), key="explorer_image_id")
    try:
        image_id = int(text)
    except ValueError:
        st.error(f"{text!r} is not an image_id (an integer)")
        return None
    return f"image {image_id}", session.embedding_of_id(image_id)


def image_explorer_page(store: AtlasStore | None = None) -> None:
    """Pick an image, see its concepts with a slider each, and render the image with the concepts rescaled."""
    from atlas.concepts import image_concepts  # torch, faiss: this page explores an image
    from atlas.generation import strip_image
    from atlas.steering import edit_activations

    store = store or _default_store()
    session = generation_session(store)
    st.title("Image explorer")
    try:
        picked = _pick_image(session)
    except AtlasError as e:
        st.error(str(e))
        return
    if picked is None:
        return
    name, z = picked
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
        members = ", ".join(map(str, c.feature_ids[:8]))
        label = f"concept {c.concept_id} · {c.label} · {c.mass_share:.0%} of the mass · features {members}"
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
        st.image(strip_image(images, ["original", "steered"], 192), caption="original · steered (same seed)")


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
