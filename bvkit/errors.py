"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class BvkitError(Exception):
    """Bad input named in one line (a missing file, a wrong shape, an unknown name...)."""
