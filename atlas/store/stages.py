"""Stage status: what the manifest says each pipeline stage has done."""

from __future__ import annotations

from typing import Any

from atlas.errors import StageMissing
from atlas.store.manifest import ManifestStore

__all__ = ["StageMissing", "StageStatus"]


class StageStatus(ManifestStore):
    """The stages recorded in an atlas's manifest."""

    def stage(self, name: str) -> dict[str, Any]:
        """The manifest's record of stage `name` ({} if it never ran)."""
        return self.manifest()["stages"].get(name, {})

    def require_stage(self, name: str, for_what: str) -> dict[str, Any]:
        """The record of stage `name`, which `for_what` needs done (StageMissing if it is not)."""
        info = self.stage(name)
        if info.get("status") != "done":
            raise StageMissing(self.uri, name, for_what)
        return info
