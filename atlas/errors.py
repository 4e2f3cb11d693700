"""The exception type for user mistakes (and its one subclass, StageMissing): the CLI prints the message as a single
line, never a traceback."""

from __future__ import annotations


class AtlasError(Exception):
    """A problem with the user's input (a config value, a file, a row), stated in one line that says what and where."""


class StageMissing(AtlasError):
    """An atlas step needs a pipeline stage that has not finished. The message says what is missing; the CLI
    adds which command to run (`stage` names it)."""

    def __init__(self, atlas: str, stage: str, for_what: str):
        super().__init__(f"{atlas}: {for_what} needs the '{stage}' stage first")
        self.atlas, self.stage, self.for_what = atlas, stage, for_what

    def __reduce__(self) -> tuple[type[StageMissing], tuple[str, str, str]]:  # pickled by Ray: rebuild from its parts
        return type(self), (self.atlas, self.stage, self.for_what)
