"""How the handlers map a reconciler's failure onto kopf's retry semantics."""

from __future__ import annotations

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError, api_exception

from tuneroute_operator import handlers, reconcile


def _fails_with(status: int, body: str = ""):
    def reconciler() -> None:
        e = ApiException(status=status, reason="Reason")
        e.body = body
        raise api_exception(e)

    return reconciler


def test_an_object_deleted_mid_reconcile_ends_it_quietly():
    handlers._run("FineTuneJob", _fails_with(404))  # the object (or a child's owner) is gone: nothing to do


def test_a_namespace_being_deleted_ends_it_quietly():
    body = '{"message": "jobs \\"x\\" is forbidden: unable to create new content in namespace t because it is being terminated"}'
    handlers._run("FineTuneJob", _fails_with(403, body))


@pytest.mark.parametrize("status", [409, 429, 500, 503])
def test_conflicts_and_server_trouble_are_retried(status):
    with pytest.raises(kopf.TemporaryError) as e:
        handlers._run("ModelRoute", _fails_with(status))
    assert e.value.delay == 5 and str(status) in str(e.value)


def test_other_refusals_surface(status=403):
    with pytest.raises(DynamicApiError):
        handlers._run("ModelRoute", _fails_with(status, '{"message": "forbidden"}'))


def test_an_invalid_spec_is_not_retried():
    def invalid() -> None:
        raise reconcile.InvalidSpec("dataset.format: method dpo needs a dataset with format preference")

    with pytest.raises(kopf.PermanentError, match=r"^dataset\.format: method dpo"):
        handlers._run("FineTuneJob", invalid)
