"""Read-only SQL over the atlas views (the same rules as `atlas sql`: one SELECT, row and time limits)."""

from __future__ import annotations

import streamlit as st

from atlas.errors import AtlasError
from schemas import TABLES
from viewer import data

MAX_ROWS = 1000
TIMEOUT_S = 10.0
EXAMPLE = "SELECT feature_id, label, frequency FROM features WHERE alive ORDER BY frequency DESC LIMIT 20"

store = data.current_store()
cfg = data.sql_config(store)
st.title("SQL")
st.caption(
    f"One read-only statement; at most {MAX_ROWS} rows, stopped after {TIMEOUT_S:g} s or at "
    f"{cfg.viewer_memory_limit} of memory; {cfg.viewer_max_concurrent} queries at once. Views: "
    + ", ".join(f"`{t}`" for t in TABLES)
)
sql = st.text_area("Query", value=EXAMPLE, key="sql_text", max_chars=5000, height=120)
limit = st.number_input("Row limit", min_value=1, max_value=MAX_ROWS, value=200, key="sql_limit")
if st.button("Run", key="sql_run", type="primary") or st.session_state.get("sql_ran"):
    st.session_state.sql_ran = True
    try:
        frame = data.run_sql(store, sql, int(limit), TIMEOUT_S)
    except AtlasError as e:
        st.error(str(e))
    else:
        for col in frame.columns:  # BLOBs (thumbnails, icons) as their size, not raw bytes
            if frame[col].map(lambda v: isinstance(v, (bytes, bytearray))).any():
                frame[col] = frame[col].map(lambda v: f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray)) else v)
        st.caption(f"{len(frame)} rows")
        st.dataframe(frame, hide_index=True, key="sql_result")
