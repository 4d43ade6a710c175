"""Retrieve Study, Series and Instance Metadata (PS3.18 table 10.4.1-2) as DICOM JSON.

The index keeps each instance's DICOM JSON as text, with BulkDataURIs relative to the
instance. The response is a JSON array of those texts with the URIs made absolute. It
is written as a stream of the stored texts, without decoding them, and the texts are
read from the index in batches, so a large study is never held in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import select

from noctis_common.db import Database
from noctis_common.db.models import Instance
from noctis_common.dicom.json_model import resolve_bulkdata_uris
from noctis_common.web import instance_url
from noctis_wado.accept import MediaRange, Offer, describe_offers, select_offer
from noctis_wado.errors import NotAcceptableError
from noctis_wado.lookup import StoredInstance
from noctis_wado.media_types import DICOM_JSON

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
