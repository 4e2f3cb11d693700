"""The atlas directory: Parquet tables written as atomic part files, the SAE folder, and manifest.json.

Every write goes to a temporary name in the destination folder and is renamed into place, so a reader
(or a rerun after a crash) sees either the whole part or nothing. Part names are deterministic
(`part-00042.parquet`), which is what makes reruns resume: a part that exists is finished work.

One module per job: `atomic` (atomic file writes), `location` (where the atlas lives, its filesystem and
well-known paths), `manifest` (the typed manifest), `parts` (table parts), `snapshot` (what readers see while a
build writes), `stages` (stage status). `AtlasStore` is all of them together.
"""

from __future__ import annotations

from atlas.store.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from atlas.store.location import CATALOG, MANIFEST, AtlasLocation
from atlas.store.manifest import Manifest, ManifestStore, StageRecord
from atlas.store.parts import TableParts, table_from_rows, vectors_to_numpy
from atlas.store.snapshot import Snapshots
from atlas.store.stages import StageMissing, StageStatus

__all__ = [
    "CATALOG",
    "MANIFEST",
    "AtlasLocation",
    "AtlasStore",
    "Manifest",
    "ManifestStore",
    "StageMissing",
    "StageRecord",
    "StageStatus",
    "TableParts",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "table_from_rows",
    "vectors_to_numpy",
]


class AtlasStore(Snapshots, StageStatus):
    """Read and write one atlas directory: a local path, or a URI that `pyarrow.fs` understands
    (`file:///mnt/atlas/x`, `s3://bucket/x`, ...).

    Table parts and the manifest go through a pyarrow filesystem, so that any node of a cluster can write and
    read them. The SAE folder, the FAISS indexes and the DuckDB catalog are handed to libraries that need a
    POSIX path (`root`); on an object store they need the bucket mounted (see the README's cluster section).
    """
