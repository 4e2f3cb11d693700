"""Where an atlas lives: a local path or a URI that `pyarrow.fs` understands, its filesystem, and the
well-known paths inside it."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import cast

import pyarrow as pa
import pyarrow.fs as pafs

from atlas.errors import AtlasError

MANIFEST = "manifest.json"
CATALOG = "atlas.duckdb"


class AtlasLocation:
    """One atlas directory: a local path, or a URI that `pyarrow.fs` understands (`file:///mnt/atlas/x`,
    `s3://bucket/x`, ...), reached through a pyarrow filesystem (`fs`) so that any node of a cluster can use it.

    The SAE folder, the FAISS indexes and the DuckDB catalog are handed to libraries that need a POSIX path
    (`root`); on an object store they need the bucket mounted (see the README's cluster section).
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.uri = _normalise_uri(os.fspath(root))
        if "://" in self.uri:
            try:
                self.fs, base = pafs.FileSystem.from_uri(self.uri)
            except (pa.ArrowInvalid, ValueError, OSError) as e:
                raise AtlasError(f"{self.uri}: not a usable atlas location ({e})") from None
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(self.uri).absolute())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.base = base.rstrip("/") or "/"
        self._root = Path(self.base) if self.local else None

    @property
    def root(self) -> Path:
        """The atlas as a local (or mounted) folder (AtlasError for an object store)."""
        if self._root is None:
            raise AtlasError(
                f"{self.uri}: this step needs the atlas on a local or mounted filesystem (SAE weights, FAISS "
                "indexes and the DuckDB catalog are read by path); mount the bucket and give its path"
            )
        return self._root

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def _path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def _out(self, path: str) -> Path:
        """`path` as callers get it: a Path on a local atlas; on another filesystem the str itself, which callers
        only hand to `str()` or pyarrow (typed Path, as the store has always promised)."""
        return Path(path) if self.local else cast(Path, path)

    def exists(self, relative: str) -> bool:
        """Whether a file or folder exists at `relative` inside the atlas."""
        return self.fs.get_file_info(self._path(relative)).type != pafs.FileType.NotFound

    def remove_path(self, relative: str) -> None:
        """Delete the file or folder at `relative` inside the atlas, if there is one."""
        path = self._path(relative)
        kind = self.fs.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(path)
        elif kind == pafs.FileType.File:
            self.fs.delete_file(path)

    def ensure_writable(self) -> None:
        """Create the atlas folder if needed and check that files can be written there (one error line if not)."""
        probe = self._path(f".write-test-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as e:
            reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise AtlasError(f"{self.uri}: cannot write the atlas here ({reason})") from None

    def is_atlas(self) -> bool:
        """Whether an atlas is here (it has a manifest)."""
        return self.fs.get_file_info(self._path(MANIFEST)).type == pafs.FileType.File

    @property
    def sae_dir(self) -> Path:
        """The SAE's folder (weights and config)."""
        return self.root / "sae"

    @property
    def index_dir(self) -> Path:
        """The FAISS indexes' folder."""
        return self.root / "index"

    @property
    def catalog_path(self) -> Path:
        """The DuckDB catalog file."""
        return self.root / CATALOG

    @property
    def manifest_path(self) -> Path:
        """The manifest file (a local path, or a filesystem path without the scheme)."""
        return self._out(self._path(MANIFEST))


def _normalise_uri(text: str) -> str:
    """A URI as given, or one that went through `pathlib.Path` on the way (`file:/x`, `s3:/b/x`) repaired."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$", text)
    if not m:
        return text
    scheme, rest = m.group(1).lower(), m.group(2)
    if "://" in text and scheme != "file":
        return text
    if scheme == "file":
        return "file:///" + rest
    return f"{scheme}://{rest}"
