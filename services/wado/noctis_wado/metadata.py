"""Retrieve Study, Series and Instance Metadata (PS3.18 table 10.4.1-2) as DICOM JSON.

The index keeps each instance's DICOM JSON as text, with BulkDataURIs relative to the
instance. The response is a JSON array of those texts with the URIs made absolute. It
is written as a stream of the stored texts, without decoding them, and the texts are
read from the index in batches, so a large study is never held in memory at once.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.responses import Response

from noctis_common.db import Database
from noctis_common.db.models import Instance, Series, SeriesMetadata, Study
from noctis_common.dicom.json_model import BULKDATA_URI_PREFIX, resolve_bulkdata_uris
from noctis_common.web import instance_url, study_url
from noctis_wado.accept import MediaRange, Offer, describe_offers, select_offer
from noctis_wado.errors import NotAcceptableError, ResourceNotFoundError
from noctis_wado.lookup import StoredInstance, check_series_in_study
from noctis_wado.media_types import DICOM_JSON

logger = logging.getLogger(__name__)

METADATA_BATCH_SIZE = 200
METADATA_OFFERS = (Offer(DICOM_JSON, multipart=False),)


def check_metadata_acceptable(ranges: Sequence[MediaRange]) -> None:
    """Raise :class:`NotAcceptableError` unless the Accept header allows DICOM JSON."""
    if select_offer(ranges, METADATA_OFFERS) is None:
        raise NotAcceptableError(
            "metadata is only available as DICOM JSON, which the Accept header does not "
            f"allow; request {describe_offers(METADATA_OFFERS)} (application/dicom+xml "
            "is not supported)"
        )


def stream_metadata(
    database: Database, instances: Sequence[StoredInstance], base_url: str
) -> Iterator[bytes]:
    """Yield the JSON array of the instances' metadata, with absolute BulkDataURIs.

    An instance deleted from the index after ``instances`` was read is left out.
    """
    yield b"["
    separator = b""
    for start in range(0, len(instances), METADATA_BATCH_SIZE):
        batch = instances[start : start + METADATA_BATCH_SIZE]
        with database.read_session() as session:
            rows = session.execute(
                select(Instance.id, Instance.metadata_json).where(
                    Instance.id.in_([instance.id for instance in batch])
                )
            ).all()
        texts = {row_id: text for row_id, text in rows}
        for instance in batch:
            text = texts.get(instance.id)
            if text is None:
                continue
            url = instance_url(
                base_url,
                instance.study_instance_uid,
                instance.series_instance_uid,
                instance.sop_instance_uid,
            )
            yield separator + resolve_bulkdata_uris(text, url).encode("utf-8")
            separator = b","
    yield b"]"


# -- study and series metadata from the per-series cache ---------------------------------
#
# Each series' metadata is cached in the ``series_metadata`` table as its instances' JSON
# texts joined by commas, with BulkDataURIs relative to the series. A cached row is valid
# while its ``revision`` equals the series' revision, which every store and deletion in
# the series increments in its own transaction. The store path only increments the
# counter; a reader rebuilds a stale row. The reader reads the revision before the
# instances, so a row is never labelled with a revision newer than its content.

SERIES_URI_PREFIX = "noctis-series:"
GZIP_LEVEL = 6
GZIP_MIN_BYTES = 1024


@dataclass(frozen=True)
class SeriesRevision:
    """A series' identity and change counter, as read before its metadata."""

    id: int
    series_instance_uid: str
    revision: int
    created_at: datetime


def find_series_revisions(
    database: Database, study_instance_uid: str, series_instance_uid: str | None = None
) -> list[SeriesRevision]:
    """Return the series of a study (or the one named), ordered as WADO-RS returns them.

    Raises :class:`ResourceNotFoundError` when the study, or the series in that study,
    is not indexed.
    """
    query = (
        select(Series.id, Series.series_instance_uid, Series.revision, Series.created_at)
        .join(Study, Series.study_fk == Study.id)
        .where(Study.study_instance_uid == study_instance_uid)
        .order_by(Series.series_number, Series.id)
    )
    if series_instance_uid is not None:
        query = query.where(Series.series_instance_uid == series_instance_uid)
    with database.read_session() as session:
        if series_instance_uid is not None:
            check_series_in_study(session, study_instance_uid, series_instance_uid)
        rows = session.execute(query).all()
    if not rows:
        raise ResourceNotFoundError(f"study {study_instance_uid} not found")
    return [SeriesRevision(*row) for row in rows]


def metadata_etag(study_instance_uid: str, series: Sequence[SeriesRevision]) -> str:
    """Return a weak ETag derived from the series' identities and revisions.

    The creation time is part of it because SQLite may reuse the row id of a deleted
    series for a new one, whose revision restarts at 1.
    """
    digest = hashlib.sha256(study_instance_uid.encode("ascii"))
    for item in series:
        digest.update(
            f"|{item.series_instance_uid}:{item.id}:{item.revision}:"
            f"{item.created_at.isoformat()}".encode("ascii")
        )
    return f'W/"{digest.hexdigest()[:32]}"'


def _build_series_metadata(session: Session, series_id: int) -> str:
    rows = session.execute(
        select(Instance.sop_instance_uid, Instance.metadata_json)
        .where(Instance.series_fk == series_id)
        .order_by(Instance.instance_number, Instance.id)
    ).all()
    return ",".join(
        text.replace(BULKDATA_URI_PREFIX, f"{SERIES_URI_PREFIX}instances/{sop_instance_uid}/")
        for sop_instance_uid, text in rows
    )


def _save_series_metadata(database: Database, series: SeriesRevision, metadata_json: str) -> None:
    """Cache a rebuilt series; losing a race to a deletion or another reader is harmless."""
    try:
        with database.write_session() as session:
            cached = session.get(SeriesMetadata, series.id)
            if cached is None:
                session.add(
                    SeriesMetadata(
                        series_fk=series.id, revision=series.revision, metadata_json=metadata_json
                    )
                )
            elif cached.revision < series.revision:
                cached.revision = series.revision
                cached.metadata_json = metadata_json
            session.commit()
    except IntegrityError:
        logger.info("metadata of series %s changed while it was cached", series.series_instance_uid)


def series_metadata_text(database: Database, series: SeriesRevision) -> str:
    """Return the series' cached metadata text, rebuilding it when its revision is stale."""
    with database.read_session() as session:
        cached = session.get(SeriesMetadata, series.id)
        if cached is not None and cached.revision == series.revision:
            return cached.metadata_json
        metadata_json = _build_series_metadata(session, series.id)
    _save_series_metadata(database, series, metadata_json)
    return metadata_json


def _stream_series_metadata(
    database: Database, series: Sequence[SeriesRevision], study_url: str
) -> Iterator[bytes]:
    yield b"["
    separator = b""
    for item in series:
        text = series_metadata_text(database, item)
        if not text:
            continue
        resolved = text.replace(
            SERIES_URI_PREFIX, f"{study_url}/series/{item.series_instance_uid}/"
        )
        yield separator + resolved.encode("utf-8")
        separator = b","
    yield b"]"


def _gzip_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Return whether an Accept-Encoding header allows gzip (RFC 9110 12.5.3)."""
    for item in (accept_encoding or "").split(","):
        coding, *parameters = [part.strip().lower() for part in item.split(";")]
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        rejected = any(
            parameter.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000")
            for parameter in parameters
        )
        return not rejected
    return False


def cached_metadata_response(
    database: Database,
    study_instance_uid: str,
    series: Sequence[SeriesRevision],
    base_url: str,
    *,
    if_none_match: str | None,
    accept_encoding: str | None,
) -> Response:
    """Return the metadata of ``series`` as DICOM JSON, 304 when the ETag matches.

    The body is gzip-compressed when the Accept-Encoding header allows it.
    """
    etag = metadata_etag(study_instance_uid, series)
    headers = {"ETag": etag, "Vary": "Accept-Encoding", "Cache-Control": "no-cache"}
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    body = _stream_series_metadata(database, series, study_url(base_url, study_instance_uid))
    if accepts_gzip(accept_encoding):
        headers["Content-Encoding"] = "gzip"
        body = _gzip_stream(body)
    return StreamingResponse(body, media_type=DICOM_JSON, headers=headers)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Compare with the weak comparison that If-None-Match uses (RFC 9110 13.1.2)."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(
        candidate.strip().removeprefix("W/") == opaque for candidate in if_none_match.split(",")
    )
