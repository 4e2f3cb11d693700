"""The build config: one TOML file, validated by pydantic at the edge.

Every section is a frozen model that forbids unknown keys, so a typo is a one-line error naming the key.
Paths in a config file are resolved against the file's folder.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atlas.errors import AtlasError
from atlas.models.sae.registry import DEFAULT_KIND, VARIANTS, SAESettings
from atlas.models.sae.relu import ReLU


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    source: str = Field(
        "builtin:shapes",
        description="builtin:shapes, an image folder, WebDataset .tar shards, Parquet files, or precomputed "
        "embeddings in clip-retrieval's layout (img_emb/ + metadata/); a path or pyarrow URI, optionally prefixed "
        "folder:, webdataset:, parquet:, embeddings:",
    )
    limit: int = Field(0, ge=0, description="embed at most this many images (0 = all)")
    thumbnail_size: int = Field(64, ge=8, le=512)
    max_image_pixels: int = Field(64_000_000, ge=1, description="larger images are refused (decompression bombs)")


class WorldConfig(_Section):
    """The generated image set used when data.source = builtin:shapes."""

    n_images: int = Field(4000, ge=1)
    image_size: int = Field(32, ge=16, le=256)
    seed: int = 0


class ModelsConfig(_Section):
    clip: str = Field("builtin:toy-clip", description="open_clip:<arch>/<pretrained>, a local model dir, or builtin:*")
    decoder: str = Field("builtin:toy-decoder", description="a diffusers model id or local dir, or builtin:*")


class ComputeConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_actors: int = Field(1, ge=1, description="model-holding Ray actors per stage")
    actor_cpus: float = Field(0.5, gt=0, description="CPUs reserved per actor (keep < 1 on small machines)")
    decode_cpus: float = Field(0.5, gt=0, description="CPUs per image-decoding Ray task")


class EmbedConfig(_Section):
    batch_size: int = Field(64, ge=1)
    part_size: int = Field(512, ge=1, description="images per output part (the unit of resume)")


class FeaturizeConfig(_Section):
    batch_size: int = Field(256, ge=1, description="embeddings per SAE forward")
    top_k: int = Field(16, ge=1, description="top images stored per feature")
    samples: int = Field(
        40, ge=1, le=1024, description="images sampled per feature (uniformly among those it fires on) for quantiles"
    )
    quantile_bins: int = Field(5, ge=1, le=100, description="activation quantile bins the samples are cut into")
    histogram_bins: int = Field(
        20, ge=2, le=200, description="bins of the histogram of log10(feature frequency) over features"
    )


class RenderConfig(_Section):
    """Icons by the "template scaled to 1/5" method (see atlas/icons.py)."""

    template: str = Field("gray", description="template image file, or gray (a flat mid-gray image)")
    template_prompt: str = Field(
        "",
        description="if set, the template is this prompt's CLIP text embedding (rescaled to an image embedding's "
        "norm) instead of an image",
    )
    template_scale: float = Field(0.2, ge=0, le=1, description="all template activations are multiplied by this (1/5)")
    feature_scale: float = Field(
        5.0,
        gt=0,
        le=10_000,
        description="the target feature is set to this activation (20-150 for Kandinsky 2.2 with a 81,920-feature SAE)",
    )
    negative: Literal["zero", "template"] = Field(
        "zero", description="negative embedding: CLIP of an all-zeros image, or the template"
    )
    keep_error: bool = Field(False, description="add the template's SAE reconstruction error back")
    steps: int = Field(12, ge=1, le=1000)
    guidance_scale: float = Field(1.5, ge=1)
    size: int = Field(
        32, ge=16, le=2048, description="icon side in pixels (rounded up to a multiple of 64 by Kandinsky)"
    )
    seed: int = Field(0, ge=0, description="the icon of feature f uses seed + f")
    half_precision: bool = Field(True, description="fp16 decoder weights on a GPU (always float32 on a CPU)")
    batch_size: int = Field(16, ge=1, description="icons per pipeline call")
    part_size: int = Field(128, ge=1, description="icons per output part (the unit of resume)")
    max_features: int = Field(0, ge=0, description="render only the first N alive features (0 = all)")


class DirectionsConfig(_Section):
    pairs: list[tuple[str, str]] = [("red", "blue"), ("green", "yellow"), ("white", "black"), ("striped", "dotted")]
    mediums: list[str] = ["small", "big"]
    subjects: list[str] = ["circle", "square", "triangle", "star", "cross", "ring"]
    template: str = "a {medium} {word} {subject}"
    top_features: int = Field(10, ge=1)

    @field_validator("template")
    @classmethod
    def _has_slots(cls, v: str) -> str:
        for slot in ("{medium}", "{word}", "{subject}"):
            if slot not in v:
                raise ValueError(f"must contain {slot}")
        return v


class IndexConfig(_Section):
    cooccurrence_top_k: int = Field(
        32, ge=1, description="partners kept per feature in `cooccurrence`, by count and by Jaccard (the union)"
    )
    cooccurrence_memory: str = Field("2 GB", description="memory of one block of the co-occurrence product")
    map_neighbors: int = Field(15, ge=2, description="UMAP neighbours of the feature map (more: a more global layout)")
    map_min_dist: float = Field(0.1, ge=0.0, le=1.0, description="UMAP min_dist of the feature map (less: tighter)")

    @field_validator("cooccurrence_memory")
    @classmethod
    def _is_size(cls, v: str) -> str:
        return normal_size(v)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
_UNIT_NAMES = {u.lower(): u for u in ("B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")}


def parse_size(text: str) -> int:
    """Bytes of a size such as "4GB", "512 MiB" or "0" (units as DuckDB reads them: GB = 10^9, GiB = 2^30)."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size like 4GB or 512MiB (got {text!r})")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").lower()])


def normal_size(text: str) -> str:
    """A size as the config shows it ("4 GB"); ValueError if `text` is not one."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"not a size like 4GB or 512MiB (got {text!r})")
    return f"{m.group(1)} {_UNIT_NAMES[(m.group(2) or 'B').lower()]}"


class SqlConfig(_Section):
    """Bounds of `atlas sql` and the viewer's SQL page (no stage reads them: they change no fingerprint)."""

    memory_limit: str = Field("4 GB", description="DuckDB memory of one `atlas sql` query (and its process cap)")
    threads: int = Field(2, ge=1, le=256, description="DuckDB threads per query")
    max_temp_size: str = Field(
        "1 GB", description="disk a query may spill to, in a temporary folder of its own (0 = no spilling)"
    )
    viewer_memory_limit: str = Field("1 GB", description="DuckDB memory shared by all of the viewer's SQL queries")
    viewer_max_concurrent: int = Field(2, ge=1, le=64, description="SQL queries the viewer runs at once")

    @field_validator("memory_limit", "max_temp_size", "viewer_memory_limit")
    @classmethod
    def _is_size(cls, v: str) -> str:
        return normal_size(v)

    @field_validator("memory_limit", "viewer_memory_limit")
    @classmethod
    def _at_least_16mb(cls, v: str) -> str:
        if parse_size(v) < 16 * 10**6:
            raise ValueError(f"must be at least 16 MB (got {v!r})")
        return v


class AtlasConfig(_Section):
    data: DataConfig = DataConfig()
    world: WorldConfig = WorldConfig()
    models: ModelsConfig = ModelsConfig()
    compute: ComputeConfig = ComputeConfig()
    embed: EmbedConfig = EmbedConfig()
    sae: SAESettings = Field(default_factory=ReLU)  # one section per SAE variant, told apart by `kind`
    featurize: FeaturizeConfig = FeaturizeConfig()
    render: RenderConfig = RenderConfig()
    directions: DirectionsConfig = DirectionsConfig()
    index: IndexConfig = IndexConfig()
    sql: SqlConfig = SqlConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_sae_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("sae"), dict) and "kind" not in data["sae"]:
            data = {**data, "sae": {"kind": DEFAULT_KIND, **data["sae"]}}
        return data

    @model_validator(mode="after")
    def _directions_nonempty(self) -> AtlasConfig:
        if not self.directions.mediums or not self.directions.subjects:
            raise ValueError("directions.mediums and directions.subjects must not be empty")
        return self

    def section_hash(self, *sections: str) -> str:
        """A short content hash of some sections: part of a stage's fingerprint."""
        blob = json.dumps({s: getattr(self, s).model_dump(mode="json") for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _format_validation_error(where: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [_printable(str(p)) for p in first["loc"]]
    variant = ""
    if len(loc) > 2 and loc[0] == "sae" and loc[1] in VARIANTS:  # pydantic names the union member: drop it
        variant = f" (sae.kind = {loc[1]!r})"
        del loc[1]
    key = ".".join(loc) or "(top level)"
    if first["type"] == "union_tag_invalid" and loc == ["sae"]:
        got_kind = first.get("ctx", {}).get("tag")
        return f"{where}: sae.kind: {got_kind!r} is not a known SAE variant (known: {', '.join(VARIANTS)})"
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key '{key}'{variant}"
    got = first.get("input")
    got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
    return f"{where}: {key}: {' '.join(first['msg'].split())}{got_text}{variant}"


def _printable(name: str) -> str:
    """A key as it can be shown on one line (a key may be any TOML string, newlines included)."""
    return name if name.isprintable() else repr(name)[1:-1]


def config_from_dict(data: dict[str, Any], where: str = "config") -> AtlasConfig:
    try:
        return AtlasConfig.model_validate(data)
    except ValidationError as e:
        raise AtlasError(_format_validation_error(where, e)) from None


def load_config(path: str | Path | None) -> AtlasConfig:
    """Load and validate a TOML config; `None` gives the embedded default. Relative paths in
    data.source, models.* and render.template resolve against the config file's folder."""
    if path is None:
        return AtlasConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AtlasError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise AtlasError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from None
    except OSError as e:
        raise AtlasError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise AtlasError(f"{path}: not valid TOML ({e})") from None
    _resolve_paths(data, path.parent.absolute())
    return config_from_dict(data, str(path))


def _is_relative_path(value: str) -> bool:
    return not (":" in value.split("/")[0] or value.startswith("/") or value in ("gray",))


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for section, key in (("data", "source"), ("models", "clip"), ("models", "decoder"), ("render", "template")):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and _is_relative_path(value) and (base / value).exists():
            data[section][key] = str(base / value)
