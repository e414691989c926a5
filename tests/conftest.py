import os
import tempfile

import pytest
import torch

from nas_kws.fileio import cache_dir

torch.set_num_threads(2)
USER_CACHE = cache_dir()   # before the tests get their own: where the default synthetic set lives
os.environ.setdefault("NAS_KWS_CACHE", tempfile.mkdtemp(prefix="nas-kws-test-cache-"))


@pytest.fixture
def user_cache(monkeypatch):
    """The user's own cache, for tests of the embedded default set: built there once (about
    2 minutes on 2 cores), then reused, rather than in every run's fresh test cache."""
    monkeypatch.setenv("NAS_KWS_CACHE", str(USER_CACHE))
    return USER_CACHE


@pytest.fixture(scope="session")
def tone_root(tmp_path_factory):
    """A small learnable custom-folders dataset (4 tone classes), shared by training tests."""
    from tone_data import write_tone_folders

    return write_tone_folders(tmp_path_factory.mktemp("tones"))
