"""Fixtures of the report tests."""

import pytest

from report_frames import make_frames


@pytest.fixture(scope="session")
def frames():
    return make_frames()
