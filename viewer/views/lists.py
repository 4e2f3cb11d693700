"""Named feature lists saved in the atlas (`lists`, append-only): open one (?list=NAME), see its features as
tiles, remove some, delete it, or make a new one from feature ids. The Feature page adds features to lists."""

from __future__ import annotations

import streamlit as st

from atlas.errors import AtlasError
from viewer import data
from viewer.tiles import feature_strip

store = data.current_store()
st.title("Feature lists")
lists = data.feature_lists(store)


def _save(name: str, ids: list[int], note: str = "") -> bool:
    try:
        data.save_feature_list(store, name, ids, note)
    except AtlasError as e:
        st.error(str(e))
        return False
    return True


with st.expander("New list", expanded=not lists):
    name = st.text_input("Name", key="new_list_name", max_chars=80)
    ids_text = st.text_input("Feature ids", key="new_list_ids", placeholder="e.g. 12, 40, 7")
    note = st.text_input("Note", key="new_list_note", max_chars=500)
    if st.button("Save list", key="new_list_save"):
        try:
            ids = [int(t) for t in ids_text.replace(",", " ").split()]
        except ValueError:
            st.error(f"feature ids {ids_text!r}: give integers separated by commas or spaces")
        else:
            if not ids:
                st.error("give at least one feature id")
            elif _save(name, ids, note):
                st.query_params["list"] = name.strip()
                st.rerun()

if not lists:
    st.info("No lists yet: make one above, or add features from a feature's page.")
    st.stop()

names = list(lists)
requested = st.query_params.get("list")
if requested in lists:
    st.session_state.list_name = requested
elif st.session_state.get("list_name") not in lists:
    st.session_state.list_name = names[0]
chosen = st.selectbox("List", names, key="list_name")
st.query_params["list"] = chosen
current = lists[chosen]
st.caption(f"{len(current.feature_ids)} features" + (f" · {current.note}" if current.note else ""))

tiles = data.features_by_id(store, current.feature_ids)
feature_strip(tiles, [f"freq {f:.3%}" for f in tiles["frequency"]], "list-feature")

cols = st.columns([3, 1, 1])
drop = cols[0].multiselect("Remove from the list", current.feature_ids, key="list_remove")
if cols[1].button("Save without them", key="list_save_removed", disabled=not drop):
    if _save(chosen, [f for f in current.feature_ids if f not in drop], current.note):
        st.rerun()
if cols[2].button("Delete list", key="list_delete") and _save(chosen, []):
    st.query_params.pop("list", None)
    st.rerun()
