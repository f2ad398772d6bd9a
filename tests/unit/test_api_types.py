"""Durations (Go syntax, as Istio's CRDs validate them) and percentages."""

from __future__ import annotations

import pytest

from sailmesh.api.types import BadValue, parse_duration, percent


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("1.5s", 1.5), ("500ms", 0.5), ("1h30m", 5400), ("0", 0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "1x", "-1s", 5])
def test_bad_durations(text: object) -> None:
    with pytest.raises(BadValue):
        parse_duration(text)


def test_percent() -> None:
    assert percent({"value": 12.5}) == 12.5
