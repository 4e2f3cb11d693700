"""Property tests of config parsing: whatever a config file holds, loading it gives a config or one
AtlasError line (never another exception, never a message over several lines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas.config import AtlasConfig, config_from_dict, load_config
from atlas.errors import AtlasError
from atlas.models.sae.registry import VARIANTS


def _known_keys() -> dict[str, list[str]]:
    keys = {
        name: list(field.annotation.model_fields) for name, field in AtlasConfig.model_fields.items() if name != "sae"
    }
    keys["sae"] = sorted({k for v in VARIANTS.values() for k in v.model_fields})
    return keys


KNOWN = _known_keys()
_scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(max_size=20)
    | st.sampled_from(["builtin:shapes", "builtin:toy-clip", "relu", "topk", "jumprelu", "auto", "cuda", "1GB"])
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_names = st.sampled_from(sorted(KNOWN)) | st.text(min_size=1, max_size=8)


@st.composite
def config_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Config documents near the real ones: known sections and keys mixed with unknown ones, values of any type."""
    doc: dict[str, Any] = {}
    for section in draw(st.lists(_names, max_size=4, unique=True)):
        keys = (
            st.sampled_from(KNOWN[section]) | st.text(min_size=1, max_size=8)
            if KNOWN.get(section)
            else st.text(min_size=1, max_size=8)
        )
        doc[section] = draw(st.dictionaries(keys, _values, max_size=4))
    if draw(st.booleans()):
        doc[draw(st.text(min_size=1, max_size=8))] = draw(_values)  # a top-level scalar
    return doc


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v)  # ints, and strings: JSON's escapes are TOML basic-string escapes


def to_toml(doc: dict[str, Any]) -> str:
    top = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    tables = [
        f"[{json.dumps(name)}]\n" + "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in body.items())
        for name, body in doc.items()
        if isinstance(body, dict)
    ]
    return "\n".join(top) + "\n" + "\n".join(tables)


def _one_line_or_config(call) -> AtlasConfig | None:
    try:
        return call()
    except AtlasError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))
        return None


@settings(max_examples=300, deadline=None)
@given(config_dicts())
def test_any_config_document_is_a_config_or_one_line(doc: dict[str, Any]) -> None:
    cfg = _one_line_or_config(lambda: config_from_dict(doc, "generated.toml"))
    if cfg is not None:  # what loads is a real, complete config that survives a round trip
        assert config_from_dict(cfg.model_dump(mode="json")) == cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=config_dicts())
def test_any_config_file_is_a_config_or_one_line_naming_the_file(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "generated.toml"
    path.write_text(to_toml(doc))
    try:
        load_config(path)
    except AtlasError as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_config_file_is_a_config_or_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "generated.toml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        load_config(path)
    except AtlasError as e:
        assert "\n" not in str(e) and str(path) in str(e), str(e)


@pytest.mark.parametrize("section", sorted(KNOWN))
def test_every_section_refuses_an_unknown_key_by_name(section: str) -> None:
    with pytest.raises(AtlasError, match=f"unknown key '{section}.not_a_key'"):
        config_from_dict({section: {"not_a_key": 1}}, "c.toml")
