"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from tests.fakes import FakeRegistry


@pytest.fixture
def registry() -> FakeRegistry:
    """An empty in-memory registry (tests/fakes.py)."""
    return FakeRegistry()
