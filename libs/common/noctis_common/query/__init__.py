"""Matching of query keys against the index (PS3.4 C.2.2.2), shared by QIDO-RS and C-FIND.

Nothing here depends on HTTP or DIMSE: a caller builds a :class:`Query`, runs
:func:`find_matches` in a read session and encodes the :class:`QueryMatch` attributes,
which are DICOM JSON elements, for its protocol. The patient level of the Patient Root
model, which C-FIND has and QIDO-RS has not, runs through :func:`find_patient_matches`.
"""

from __future__ import annotations

from noctis_common.query.errors import InvalidQueryError
from noctis_common.query.keys import (
    INDEXED_KEYS,
    IndexedKey,
    Matching,
    find_indexed_key,
    matchable_keywords,
)
from noctis_common.query.levels import QueryRetrieveLevel, level_of_tag
from noctis_common.query.patients import (
    PATIENT_KEYS,
    PatientMatch,
    PatientPage,
    PatientQuery,
    find_patient_matches,
    is_patient_level_tag,
)
from noctis_common.query.results import json_key, vr_of_tag
from noctis_common.query.search import (
    InstanceReference,
    Query,
    QueryMatch,
    QueryPage,
    describe_tag,
    find_matches,
)

__all__ = [
    "INDEXED_KEYS",
    "PATIENT_KEYS",
    "IndexedKey",
    "InstanceReference",
    "InvalidQueryError",
    "Matching",
    "PatientMatch",
    "PatientPage",
    "PatientQuery",
    "Query",
    "QueryMatch",
    "QueryPage",
    "QueryRetrieveLevel",
    "describe_tag",
    "find_indexed_key",
    "find_matches",
    "find_patient_matches",
    "is_patient_level_tag",
    "json_key",
    "level_of_tag",
    "matchable_keywords",
    "vr_of_tag",
]
