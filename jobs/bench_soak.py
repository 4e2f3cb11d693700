"""`atlas bench soak`: the viewer under sustained load and hostile input, checked for survival and leaks.

SESSIONS well-behaved sessions loop over the grid, feature, search and SQL pages with no think time for
MINUTES, driven through Streamlit's own websocket protocol as `atlas bench view` does (widgets are filled the
way a browser fills them: the ids come from the page's own elements, the values go back in
`BackMsg.rerun_script.widget_states`). Beside them a few hostile sessions send malformed query strings and
page names, SQL that runs into the time limit, and uploads over the size limit. The result: every page
finished, no session saw a traceback (an `exception` element), the server still answers, and its resident
memory after the run against after warm-up (the figure the issue bounds at 1.10).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from jobs.bench_view import start_viewer, stop_viewer, write_synthetic_atlas

SLOW_SQL = "SELECT count(*) FROM range(200000000) a(x), range(100) b(y) WHERE a.x + b.y = -1"
BAD_QUERIES = [
    ("feature", "feature=abc"), ("feature", "feature=-5"), ("feature", "feature=99999999999999999999"),
    ("feature", "feature=%ZZ%00&feature=1"), ("feature", "x=" + "%" * 3000), ("grid", "page=-1&label=%27;DROP"),
    ("no-such-page", ""), ("../../etc/passwd", "feature=1"),
]  # fmt: skip
WORDS = ["red", "circle", "striped", "big", "blue square", "", "a" * 300]


class Session:
    """One websocket session; counts pages, tracebacks and unclean finishes."""

    def __init__(self, ws: Any, stats: dict[str, Any]) -> None:
        self.ws, self.stats = ws, stats

    async def page(self, page: str, query: str = "", widgets: dict[str, Any] | None = None) -> dict[str, str]:
        """Run one page (with these widget values, by label); returns the widget ids on it, by label."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        msg.rerun_script.query_string = query
        msg.rerun_script.page_name = page
        for wid, value in (widgets or {}).items():
            state = msg.rerun_script.widget_states.widgets.add()
            state.id = wid
            if value is True:
                state.trigger_value = True
            else:
                state.string_value = value
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        ids: dict[str, str] = {}
        while True:
            fwd = ForwardMsg()
            fwd.ParseFromString(await asyncio.wait_for(self.ws.recv(), timeout=600))
            kind = fwd.WhichOneof("type")
            if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                element = fwd.delta.new_element
                etype = element.WhichOneof("type")
                if etype == "exception":
                    self.stats["tracebacks"].append(f"{page}?{query[:60]}: {element.exception.message[:200]}")
                elif etype == "alert":  # st.error / st.warning: a refusal shown as one line, as designed
                    shown = self.stats["messages"]
                    shown[element.alert.body[:70]] = shown.get(element.alert.body[:70], 0) + 1
                elif etype in ("text_input", "text_area", "button"):
                    ids[getattr(element, etype).label] = getattr(element, etype).id
            elif kind == "script_finished":
                self.stats["latency_s"].append(time.perf_counter() - t0)
                if fwd.script_finished != ForwardMsg.FINISHED_SUCCESSFULLY:
                    self.stats["unclean"].append(f"{page}?{query[:60]}: {fwd.script_finished}")
                self.stats["pages"] += 1
                return ids


async def _connect(url: str):
    import websockets
    from websockets.typing import Origin, Subprotocol

    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    return await websockets.connect(ws_url, subprotocols=[Subprotocol("streamlit")], origin=Origin(url), max_size=2**27)


async def _browse(url: str, until: float, seed: int, stats: dict[str, Any]) -> None:
    """A well-behaved session: grid, a random feature, a text search, a quick SQL query, over and over."""
    rng = np.random.default_rng(seed)
    async with await _connect(url) as ws:
        s = Session(ws, stats)
        search = await s.page("search")
        sql = await s.page("sql")
        while time.monotonic() < until:
            await s.page("grid")
            await s.page("feature", f"feature={int(rng.integers(0, stats['features']))}")
            await s.page("search", widgets={search["Words"]: str(rng.choice(WORDS))})
            limit = int(rng.integers(1, 50))
            query = f"SELECT feature_id, frequency FROM features ORDER BY frequency DESC LIMIT {limit}"
            await s.page("sql", widgets={sql["Query"]: query, sql["Run"]: True})


async def _hostile(url: str, until: float, stats: dict[str, Any]) -> None:
    """Malformed query strings and page names, and SQL that runs into the time limit."""
    async with await _connect(url) as ws:
        s = Session(ws, stats)
        sql = await s.page("sql")
        while time.monotonic() < until:
            for page, query in BAD_QUERIES:
                await s.page(page, query)
            await s.page("sql", widgets={sql["Query"]: SLOW_SQL, sql["Run"]: True})
            await s.page("sql", widgets={sql["Query"]: "COPY features TO '/tmp/x.csv'", sql["Run"]: True})


def _oversized_uploads(url: str, until: float, mib: int, stats: dict[str, Any]) -> None:
    """PUT bodies over the server's upload limit to its upload endpoint, as a client ignoring the widget would."""
    body = b"\0" * ((mib + 1) * 2**20)
    while time.monotonic() < until:
        req = urllib.request.Request(f"{url}/_stcore/upload_file/not-a-session/not-a-file", data=body, method="PUT")
        try:
            urllib.request.urlopen(req, timeout=60).read()
            stats["uploads_accepted"] += 1
        except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError, TimeoutError):
            stats["uploads_refused"] += 1
        time.sleep(1.0)


def _server_rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


async def _load(url: str, seconds: float, sessions: int, hostile: int, stats: dict[str, Any]) -> None:
    """`sessions` browsing and `hostile` hostile sessions and one uploader for `seconds`; a session that died
    (a dropped connection, a page that never finished) is recorded in stats["session_failures"]."""
    from atlas.uploads import UPLOADS

    until = time.monotonic() + seconds
    tasks = [_browse(url, until, seed, stats) for seed in range(sessions)]
    tasks += [_hostile(url, until, stats) for _ in range(hostile)]
    tasks.append(asyncio.to_thread(_oversized_uploads, url, until, UPLOADS.max_mib, stats))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stats["session_failures"] += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]


def _sample_rss(pid: int, until: float, every_s: float, series: list[tuple[float, float]]) -> None:
    t0 = time.monotonic()
    while time.monotonic() < until:
        time.sleep(every_s)
        series.append((round(time.monotonic() - t0, 1), round(_server_rss_mb(pid), 1)))


def run_soak(minutes: float, sessions: int = 20, hostile: int = 3, n_features: int = 80_000) -> dict[str, Any]:
    """Build the synthetic atlas, start the viewer, warm every page up, then run the load for `minutes`."""
    with tempfile.TemporaryDirectory(prefix="atlas-soak-") as tmp:
        store = write_synthetic_atlas(Path(tmp) / "atlas", n_features)
        proc, url = start_viewer(store)
        stats: dict[str, Any] = {
            "features": n_features, "pages": 0, "latency_s": [], "tracebacks": [], "unclean": [],
            "uploads_accepted": 0, "uploads_refused": 0, "session_failures": [],
            "messages": {},
        }  # fmt: skip
        try:
            asyncio.run(_load(url, 20, 2, 1, stats))  # warm-up: every page, the models, caches and connections
            rss_warm = _server_rss_mb(proc.pid)
            warm_pages = stats["pages"]
            series: list[tuple[float, float]] = []
            seconds = minutes * 60

            async def load_and_sample() -> None:
                sampler = asyncio.to_thread(_sample_rss, proc.pid, time.monotonic() + seconds, 30, series)
                await asyncio.gather(_load(url, seconds, sessions, hostile, stats), sampler)

            t0 = time.perf_counter()
            asyncio.run(load_and_sample())
            elapsed = time.perf_counter() - t0
            rss_end = _server_rss_mb(proc.pid)
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as r:
                healthy = r.read().strip() == b"ok"
            asyncio.run(_load(url, 1, 1, 0, stats))  # and a new session after the run is served in full
        finally:
            stop_viewer(proc)
    lat = np.asarray(stats["latency_s"][warm_pages:]) * 1000
    return {
        "minutes": minutes, "sessions": sessions, "hostile_sessions": hostile, "features": n_features,
        "pages": stats["pages"] - warm_pages, "pages_per_s": (stats["pages"] - warm_pages) / elapsed,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95))},
        "tracebacks_seen": stats["tracebacks"][:20], "n_tracebacks": len(stats["tracebacks"]),
        "unclean_finishes": stats["unclean"][:20], "session_failures": stats["session_failures"][:20],
        "oversized_uploads": {"refused": stats["uploads_refused"], "accepted": stats["uploads_accepted"]},
        "server_answers_after": healthy,
        "messages_shown": dict(sorted(stats["messages"].items(), key=lambda kv: -kv[1])[:20]),
        "server_rss_mb": {"after_warmup": round(rss_warm, 1), "after_run": round(rss_end, 1), "series": series},
        "rss_growth": rss_end / rss_warm,
    }  # fmt: skip
