"""The one exception type for user mistakes: the CLI prints its message as a single line, never a traceback."""


class AtlasError(Exception):
    """A problem with the user's input (a config value, a file, a row), stated in one line that says what and where."""
