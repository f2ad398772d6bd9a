"""Fuzzing (hypothesis) of everything that reads untrusted input, in the suite's reduced form (issue 13):
config text through `sailmesh validate`'s path, documents through parsing and validation, the HTTP API of a real
control plane on loopback, and xDS request streams against its real ADS server. `python -m bench.fuzz` runs the
same properties with thousands of examples (counts in docs/reliability.md).

Derandomized here (the same examples every run, so CI cannot flake on a new find); the bench runs random seeds.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from bench.fuzz import strategies as fuzz
from bench.fuzz.targets import Harness, check_document, check_validate_text

EXAMPLES = int(os.environ.get("SAILMESH_FUZZ_EXAMPLES", "25"))
SUITE = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def harness():
    h = Harness()
    try:
        yield h
    finally:
        h.close()


@SUITE
@given(fuzz.config_texts)
def test_validate_never_crashes_on_any_config_text(text: str) -> None:
    check_validate_text(text)


@SUITE
@given(fuzz.documents)
def test_parsing_and_validation_never_crash_on_any_document(doc) -> None:
    check_document(doc)


@SUITE
@given(req=fuzz.api_requests())
def test_the_http_api_never_answers_5xx(harness: Harness, req) -> None:
    harness.check_http(req)


@SUITE
@given(script=fuzz.xds_scripts())
def test_xds_streams_end_cleanly_whatever_the_requests(harness: Harness, script) -> None:
    harness.check_xds(script)
