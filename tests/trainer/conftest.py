import os

import pytest

# Triton kernels run on the CPU through the interpreter when there is no GPU; this must be set
# before triton compiles anything, i.e. before tuneroute_trainer.moe_lora.triton_ops is imported.
try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:  # the config tests need no torch
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def termination_log(tmp_path, monkeypatch):
    path = tmp_path / "termination-log"
    monkeypatch.setenv("TUNEROUTE_TERMINATION_LOG", str(path))
    return path
