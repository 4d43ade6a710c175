"""The render step of a QIDO-RS search: DICOM JSON results and their headers.

The body is a JSON array with one DICOM JSON object per match (PS3.18 F.2), its
attributes in tag order. No match gives ``200`` with ``[]``, although PS3.18 8.3.4.4.1
requires ``204 No Content``: dicomweb-client 0.61 returns ``[]`` for both, and an empty
array keeps the body valid JSON for clients that parse every 200 response.

Specific Character Set (0008,0005) is left out unless the request names it, because the
JSON text is always UTF-8 (PS3.18 F.2.2, RFC 8259). When the request names it, its
value is ``ISO_IR 192``, the character set of what is sent, not of the stored instances.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response

from noctis_common.dicom.json_model import resolve_bulkdata_uris
from noctis_common.query import QueryMatch, QueryPage, QueryRetrieveLevel, json_key
from noctis_common.web import instance_url, series_url, study_url
from noctis_qido.defaults import RETRIEVE_URL_TAG, SPECIFIC_CHARACTER_SET_TAG
from noctis_qido.parse import SearchRequest

UTF8_CHARACTER_SET = "ISO_IR 192"
RESULTS_CUT_WARNING = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)


def retrieve_url(match: QueryMatch, level: QueryRetrieveLevel, base_url: str) -> str:
    """Return the WADO-RS URL of a matched study, series or instance."""
    if level is QueryRetrieveLevel.STUDY or match.series_instance_uid is None:
        return study_url(base_url, match.study_instance_uid)
    if level is QueryRetrieveLevel.SERIES or match.sop_instance_uid is None:
        return series_url(base_url, match.study_instance_uid, match.series_instance_uid)
    return instance_url(
        base_url, match.study_instance_uid, match.series_instance_uid, match.sop_instance_uid
    )


def render_match(match: QueryMatch, search: SearchRequest, base_url: str) -> str:
    """Return one result as DICOM JSON text."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, element in match.attributes.items():
        if int(name, 16) in search.returned_if_known and "Value" not in element:
            continue
        attributes[name] = element
    attributes[json_key(RETRIEVE_URL_TAG)] = {
        "vr": "UR",
        "Value": [retrieve_url(match, search.query.level, base_url)],
    }
    if search.specific_character_set_requested:
        attributes[json_key(SPECIFIC_CHARACTER_SET_TAG)] = {
            "vr": "CS",
            "Value": [UTF8_CHARACTER_SET],
        }
    text = json.dumps(dict(sorted(attributes.items())), ensure_ascii=False)
    source = match.metadata_source
    if source is None:
        return text
    return resolve_bulkdata_uris(
        text,
        instance_url(
            base_url,
            source.study_instance_uid,
            source.series_instance_uid,
            source.sop_instance_uid,
        ),
    )


def warning_header(base_url: str, text: str) -> str:
    """Return a Warning header value with code 299 and the service as agent (RFC 7234 5.5)."""
    return f'299 {base_url}: "{text}"'


def render_search_results(page: QueryPage, search: SearchRequest, base_url: str) -> Response:
    """Return the Search transaction response (PS3.18 10.6.3) for one page of matches."""
    body = "[" + ",".join(render_match(match, search, base_url) for match in page.matches) + "]"
    response = Response(content=body.encode("utf-8"), media_type=search.media_type)
    warnings = list(search.warnings)
    if page.more_matches and search.server_limit_applies:
        warnings.append(RESULTS_CUT_WARNING)
    for text in warnings:
        response.headers.append("Warning", warning_header(base_url, text))
    return response
