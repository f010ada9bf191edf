"""Tests that need a CUDA GPU: skipped without one (CI has none; run them where a GPU is lent).
Triton compiles for real here: TRITON_INTERPRET must not be set."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    here = os.path.dirname(__file__)
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (and TRITON_INTERPRET unset)")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)
