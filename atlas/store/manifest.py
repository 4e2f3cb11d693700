"""manifest.json: what the pipeline recorded about an atlas (its stages, config, models, committed table parts),
as a typed model that every read and write is checked against.

The dict API (`manifest()`, `update_manifest(change)`) stays what callers index; the dict is the JSON as written,
checked against `Manifest`, so a manifest is rewritten with exactly the keys and values it had. `read_manifest()`
gives the typed model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atlas.errors import AtlasError
from atlas.store.atomic import atomic_write_bytes, json_bytes
from atlas.store.location import MANIFEST, AtlasLocation
from schemas import FORMAT_VERSION


class StageRecord(BaseModel):
    """One stage's entry under `stages` (keys of other or older writers are kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True)

    status: Literal["running", "done", "failed"]  # running: it started and has not ended (or was killed)
    fingerprint: str | None = None  # the hash of the stage's config and its dependencies' run ids
    run_id: str | None = None  # new on every finished run: downstream stages rerun when it changes
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None  # why a failed stage stopped: its one-line error


class PartRecord(BaseModel):
    """What a committed part file was when it was written: checked by `atlas check`."""

    model_config = ConfigDict(extra="allow", strict=True)

    rows: int
    bytes: int
    sha256: str


class Manifest(BaseModel):
    """The whole manifest (keys of other or older writers are kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True)

    format_version: int = 0
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    updated: str | None = None  # when it was last written (UTC, ISO 8601)
    config: dict[str, Any] | None = None  # the AtlasConfig of the last build, as JSON
    versions: dict[str, str] = Field(default_factory=dict)  # package versions of the last build
    models: dict[str, str] = Field(default_factory=dict)  # role (clip, decoder) -> model spec
    tables: dict[str, list[str]] = Field(default_factory=dict)  # table -> its committed part files (snapshot)
    tables_version: int = 0  # bumped on every change of `tables`
    parts: dict[str, dict[str, PartRecord]] = Field(default_factory=dict)  # table -> part file -> its record
    evaluation: dict[str, Any] | None = None  # the summary of `atlas eval`


def new_manifest() -> dict[str, Any]:
    """The manifest of an atlas that has none yet."""
    return {"format_version": FORMAT_VERSION, "stages": {}}


def validate_manifest(data: dict[str, Any], where: object) -> Manifest:
    """`data` as a `Manifest`; a malformed one is one AtlasError line naming `where` and the bad key."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise AtlasError(f"{where}: malformed manifest ({_first_error(e)})") from None


def _first_error(e: ValidationError) -> str:
    errors = e.errors()
    first = errors[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"'{key}': {first['msg'].splitlines()[0]}{more}"


def _check_version(data: dict[str, Any], where: object) -> None:
    version = data.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise AtlasError(
            f"{where}: written by a newer atlas format (v{version}); this tool reads up to "
            f"v{FORMAT_VERSION}: upgrade clip-feature-atlas"
        )


class ManifestStore(AtlasLocation):
    """An atlas location with its manifest: read (checked), changed and atomically rewritten."""

    def _read_manifest_json(self) -> dict[str, Any]:
        """The manifest as JSON, format-checked (a new one where there is no atlas yet)."""
        try:
            with self.fs.open_input_stream(self._path(MANIFEST)) as f:
                raw = f.read()
        except FileNotFoundError:
            return new_manifest()
        except (OSError, pa.ArrowException) as e:
            try:
                missing = not self.is_atlas()
            except (OSError, pa.ArrowException):
                missing = False
            if missing:
                return new_manifest()
            raise AtlasError(f"{self.uri}/{MANIFEST}: unreadable manifest ({str(e).splitlines()[0]})") from None
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise AtlasError(f"{self.manifest_path}: unreadable manifest ({e})") from None
        if not isinstance(data, dict):
            raise AtlasError(f"{self.manifest_path}: unreadable manifest (not a JSON object)")
        _check_version(data, self.manifest_path)
        return data

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (an empty one for a new atlas), checked against `Manifest`. Refuses atlases
        written by a newer format."""
        data = self._read_manifest_json()
        validate_manifest(data, self.manifest_path)
        data.setdefault("stages", {})
        return data

    def read_manifest(self) -> Manifest:
        """The manifest as the typed model (see `manifest`)."""
        return validate_manifest(self._read_manifest_json(), self.manifest_path)

    def update_manifest(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, change and atomically rewrite the manifest (the driver is its only writer). A change that
        leaves it malformed is a bug: ValueError, and nothing is written."""
        data = self.manifest()
        change(data)
        data["format_version"] = FORMAT_VERSION
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            Manifest.model_validate(data)
        except ValidationError as e:
            raise ValueError(
                f"{self.manifest_path}: refusing to write a malformed manifest ({_first_error(e)})"
            ) from None
        blob = json_bytes(data)
        if self.local:
            atomic_write_bytes(Path(self._path(MANIFEST)), blob)
        else:
            with self.fs.open_output_stream(self._path(MANIFEST)) as f:
                f.write(blob)
        return data
