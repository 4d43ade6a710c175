"""The query step of a QIDO-RS search: one page of matches from the index."""

from __future__ import annotations

from noctis_common.db import Database
from noctis_common.query import Query, QueryPage, find_matches


def search_index(database: Database, query: Query) -> QueryPage:
    """Run ``query`` in a read session; raises :class:`InvalidQueryError` for a bad key."""
    with database.read_session() as session:
        return find_matches(session, query)
