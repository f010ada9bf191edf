"""Operator settings come from the environment the chart sets, and bad values stop it early."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tuneroute_operator.__main__ import peering_priority
from tuneroute_operator.settings import Settings


def test_settings_from_chart_environment(monkeypatch):
    monkeypatch.setenv("TUNEROUTE_NAMESPACES", "ml-team, research")
    monkeypatch.setenv("TUNEROUTE_TRAINER_IMAGE", "registry.local/trainer:1")
    monkeypatch.setenv("TUNEROUTE_LOG_FORMAT", "json")
    s = Settings()
    assert (
        s.namespaces == ["ml-team", "research"]
        and s.trainer_image == "registry.local/trainer:1"
        and s.log_format == "json"
    )


def test_empty_namespaces_means_cluster_wide(monkeypatch):
    monkeypatch.setenv("TUNEROUTE_NAMESPACES", "")
    assert Settings().namespaces == []


def test_bad_log_format_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("TUNEROUTE_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def test_replicas_of_one_deployment_get_distinct_peering_priorities(monkeypatch):
    priorities = set()
    for pod in ("tuneroute-7d9f-abcde", "tuneroute-7d9f-fghij", "tuneroute-7d9f-klmno"):
        monkeypatch.setenv("POD_NAME", pod)
        priorities.add(peering_priority(None))
    assert len(priorities) == 3
    assert peering_priority(42) == 42
