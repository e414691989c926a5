import os
import tempfile

import pytest
import torch

torch.set_num_threads(2)
os.environ.setdefault("NAS_KWS_CACHE", tempfile.mkdtemp(prefix="nas-kws-test-cache-"))


@pytest.fixture(scope="session")
def tone_root(tmp_path_factory):
    """A small learnable custom-folders dataset (4 tone classes), shared by training tests."""
    from tone_data import write_tone_folders

    return write_tone_folders(tmp_path_factory.mktemp("tones"))
