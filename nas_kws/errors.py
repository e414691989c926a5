"""The errors a user can fix (bad input, missing files), told apart from bugs.

Library code raises `NasKwsError` (or ValueError / OSError) for those; every entry point prints
them as one line and exits with code 2 (`nas_kws.cliflags.run_main`), while any other exception
is a bug and keeps its traceback.
"""
from __future__ import annotations

import yaml


class NasKwsError(Exception):
    """A failure the user can fix that is neither a ValueError nor an OSError."""


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (NasKwsError, ValueError, OSError,
                                                     yaml.YAMLError)
