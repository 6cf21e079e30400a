"""The one base of every error that ends a run with one clean ERROR line.

It imports nothing from the package, so any layer (the wire included) can derive from it.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """A failure the user can act on: the run ends with one ERROR line and exit status 1.

    The message says what to fix; the traceback is logged only at LOGLEVEL=DEBUG.
    """
