"""Two SAEs compared (`atlas diff`): the share of each kind, the distribution of best decoder cosines, and every
matched, split, merged, gone or new group with both sides' icons and labels side by side."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

from viewer import data
from viewer.tiles import data_uri

KINDS = ("split", "merged", "matched", "gone", "new")
GROUPS_PER_PAGE = 10

store = data.current_store()
st.title("Diff")
record = data.diff_record(store)
if record is None or not store.parts("diff_matches"):
    st.info("No diff in this atlas: `atlas diff A B` writes one into A (or `--out DIR`).")
    st.stop()

here = str(store.root)
sides = {
    "a": store if str(Path(record["a"]).resolve()) == here else data.side_store(record["a"]),
    "b": store if str(Path(record["b"]).resolve()) == here else data.side_store(record["b"]),
}
st.caption(
    f"A: `{record['a']}` ({record['alive_a']:,} alive features) · B: `{record['b']}` "
    f"({record['alive_b']:,} alive) · {record['shared_images']:,} shared images"
)
summary = data.diff_summary(store)
st.dataframe(
    summary,
    hide_index=True,
    column_config={
        "share_a": st.column_config.NumberColumn(format="percent"),
        "share_b": st.column_config.NumberColumn(format="percent"),
    },
)
cosines = data.diff_cosines(store)
st.caption("Each alive feature's best decoder cosine to the other SAE")
cosines["cosine"] = [f"{low:.2f}" for low in cosines.bin_low]
st.bar_chart(cosines.pivot(index="cosine", columns="side", values="features"), height=180, stack=False)

present = [k for k in KINDS if int(summary.loc[summary.kind == k, "groups"].sum()) > 0]
if not present:
    st.stop()
controls = st.columns(3)
kind = controls[0].selectbox("Kind", present, key="diff_kind")
order = controls[1].selectbox("Order", list(data.DIFF_ORDERS), key="diff_order")
total = data.diff_group_count(store, kind)
pages = max(1, math.ceil(total / GROUPS_PER_PAGE))
page = controls[2].number_input("Page", min_value=1, max_value=pages, step=1, key="diff_page")
rows = data.diff_groups(store, kind, order, GROUPS_PER_PAGE, (page - 1) * GROUPS_PER_PAGE)
st.caption(f"{total:,} {kind} groups, page {page} of {pages}")


def cards(side: str, ids: list[int]) -> pd.DataFrame:
    other = sides[side]
    if other is None or not ids:
        return pd.DataFrame({"feature_id": ids, "label": [None] * len(ids), "icon": [None] * len(ids)})
    return data.features_by_id(other, tuple(ids))


def show_side(side: str, ids: list[int], notes: dict[int, str]) -> None:
    for card in cards(side, ids).itertuples():
        with st.container(border=True):
            icon_col, text_col = st.columns([1, 3])
            if card.icon is not None:
                icon_col.image(data_uri(card.icon), width="stretch")
            text_col.markdown(
                f"**{side.upper()} #{card.feature_id}** · {card.label or '–'}  \n{notes.get(card.feature_id, '')}"
            )
            if sides[side] is store:
                text_col.page_link(
                    "views/feature.py", label=f"Open {side.upper()} #{card.feature_id}",
                    query_params={"feature": str(card.feature_id)},
                )  # fmt: skip
            elif data.compare_url():
                text_col.link_button(
                    f"Open {side.upper()} #{card.feature_id}", f"{data.compare_url()}/feature?feature={card.feature_id}"
                )


def _fmt(value: object, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


for group_id, group in rows.groupby("group_id", sort=False):
    first = group.iloc[0]
    with st.container(border=True):
        st.markdown(
            f"**{kind}** · group {group_id} · fit cosine {_fmt(first.group_cosine, '.3f')} · "
            f"correlation {_fmt(first.group_correlation, '.3f')}"
        )
        left, right = st.columns(2)
        parts_side = "a" if kind == "merged" else "b"  # the side whose rows differ within the group
        notes = {
            int(getattr(r, f"feature_{parts_side}")): f"cosine {_fmt(r.cosine, '.3f')} · corr "
            f"{_fmt(r.correlation, '.2f')} · weight {_fmt(r.weight, '.2f')}"
            for r in group.itertuples()
            if not pd.isna(getattr(r, f"feature_{parts_side}"))
        }
        for column, side in ((left, "a"), (right, "b")):
            with column:
                ids = sorted({int(f) for f in group[f"feature_{side}"].dropna()})
                show_side(side, ids, notes if side == parts_side else {})
