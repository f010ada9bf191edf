from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ftj_body():
    body = yaml.safe_load((REPO / "examples" / "10-finetunejob-qwen3-moe.yaml").read_text())
    body["metadata"].update(namespace="ml", uid="uid-ftj", generation=1)
    return copy.deepcopy(body)


@pytest.fixture
def route_body():
    body = yaml.safe_load((REPO / "examples" / "20-modelroute-three-tiers.yaml").read_text())
    body["metadata"].update(namespace="ml", uid="uid-route", generation=1)
    return copy.deepcopy(body)
