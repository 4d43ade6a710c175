"""Fixtures: the Storage SCP running in the test process on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from noctis_common.settings import Settings
from tests.ingest_scp.helpers import RunningSCP, running_scp


@pytest.fixture
def scp(settings: Settings) -> Iterator[RunningSCP]:
    """The SCP over the index that ``database_url`` selects (SQLite and PostgreSQL)."""
    with running_scp(settings) as running:
        yield running


@pytest.fixture
def sqlite_scp(sqlite_settings: Settings) -> Iterator[RunningSCP]:
    """The SCP over a SQLite index."""
    with running_scp(sqlite_settings) as running:
        yield running
