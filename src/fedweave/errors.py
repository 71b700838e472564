"""Error types. A ``UserError`` is something the user can fix: the CLI prints its one-line
message and exits with code 2, without a traceback and without creating a run directory."""


class UserError(Exception):
    """Bad input (config, missing file, impossible partition): exit code 2."""


class DatasetMissingError(UserError):
    """A dataset's files are not on disk; the message names the path and how to get them."""


class DivergenceError(UserError):
    """Training produced NaN/inf: names the round and the fix (lower the learning rate)."""
