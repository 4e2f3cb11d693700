"""The viewer's server: Streamlit's pages (viewer/app.py) as an `st.App`, plus `/icons/<feature_id>.png`.

The route serves one feature's icon by URL, read from the icon parts that hold it, so that a chart of
81,920 features can show any one icon on hover (the feature map's tooltip) without shipping them all.
`atlas view` runs this file with `streamlit run`, which sees the `st.App` and serves it with uvicorn.
"""

from __future__ import annotations

import streamlit as st
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from viewer.tiles import ICONS_PATH


def _icon(request: Request) -> Response:
    # a plain function: Starlette runs it in its thread pool, off the event loop that serves the sessions.
    # viewer.data is imported here, once the runtime exists, so that its caches are the runtime's.
    from viewer import data

    icon = data.icon_png(data.current_store(), int(request.path_params["feature_id"]))
    if icon is None:
        return Response(status_code=404)
    return Response(icon, media_type="image/png", headers={"Cache-Control": "max-age=300"})


app = st.App("app.py", routes=[Route(ICONS_PATH + "/{feature_id:int}.png", _icon)])
