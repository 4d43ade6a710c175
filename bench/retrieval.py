"""DICOMweb read measures: QIDO-RS lists, metadata, frames, rendered JPEG, whole studies.

Each request is the same path on every target, so Orthanc's DICOMweb plugin and Noctis
answer the same question. Latencies are client-side wall times over loopback.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from bench.corpus import Corpus, CorpusStudy

logger = logging.getLogger(__name__)

DICOM_JSON = {"Accept": "application/dicom+json"}
FRAMES = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
JPEG = {"Accept": "image/jpeg"}
WHOLE_STUDY = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
# The fields that OHIF's study list requests with every query.
OHIF_INCLUDE_FIELDS = "00081030,00080060"


@dataclass(frozen=True)
class HttpRequest:
    """One named GET that a measure repeats."""

    name: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=lambda: dict(DICOM_JSON))
    # Report MB/s of the response body in place of latency percentiles.
    throughput: bool = False


def percentile(values: list[float], fraction: float) -> float:
    """Return the value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def study_list_requests(
    patient_name: str, study_date: str, accession_number: str
) -> list[HttpRequest]:
    """Return the queries of OHIF's study list, with values that match stored studies."""
    base = {"limit": "101", "offset": "0", "fuzzymatching": "false"}
    base["includefield"] = OHIF_INCLUDE_FIELDS
    family = patient_name.split("^", 1)[0]
    year = study_date[:4]
    return [
        HttpRequest("QIDO all studies, limit=101", "/studies", dict(base)),
        HttpRequest(
            "QIDO PatientName wildcard", "/studies", {**base, "PatientName": f"{family[:3]}*"}
        ),
        HttpRequest(
            "QIDO StudyDate range", "/studies", {**base, "StudyDate": f"{year}0101-{year}0630"}
        ),
        HttpRequest(
            "QIDO AccessionNumber", "/studies", {**base, "AccessionNumber": accession_number}
        ),
        HttpRequest("QIDO ModalitiesInStudy=MR", "/studies", {**base, "ModalitiesInStudy": "MR"}),
    ]


def list_requests(study_instance_uid: str, series_instance_uid: str) -> list[HttpRequest]:
    """Return the series list of a study and the instance list of one of its series."""
    return [
        HttpRequest("QIDO series of a study", f"/studies/{study_instance_uid}/series"),
        HttpRequest(
            "QIDO instances of a series",
            f"/studies/{study_instance_uid}/series/{series_instance_uid}/instances",
        ),
    ]


def read_requests(
    corpus: Corpus, first_sop_instance_uid: Callable[[CorpusStudy], str]
) -> list[HttpRequest]:
    """Return every read measure against the loaded corpus.

    ``first_sop_instance_uid`` returns the SOP Instance UID of a study's first file.
    """
    reference = corpus.query_studies[len(corpus.query_studies) // 2].study
    requests = study_list_requests(
        reference.patient_name, reference.study_date, reference.accession_number
    )
    large = corpus.metadata_large
    requests += list_requests(large.study.study_instance_uid, large.series_instance_uids[0])
    small = corpus.metadata_small
    requests.append(
        HttpRequest(
            "Study metadata, 50 instances", f"/studies/{small.study.study_instance_uid}/metadata"
        )
    )
    requests.append(
        HttpRequest(
            f"Study metadata, {len(large.files)} instances",
            f"/studies/{large.study.study_instance_uid}/metadata",
        )
    )
    requests.append(
        HttpRequest(
            f"Series metadata, {len(large.files) // 4} instances",
            f"/studies/{large.study.study_instance_uid}/series/{large.series_instance_uids[0]}/metadata",
        )
    )
    multiframe = corpus.multiframe
    instance_path = (
        f"/studies/{multiframe.study.study_instance_uid}/series/"
        f"{multiframe.series_instance_uids[0]}/instances/{first_sop_instance_uid(multiframe)}"
    )
    requests.append(
        HttpRequest(
            "Frame 5 of a 512 x 512 multi-frame", f"{instance_path}/frames/5", headers=FRAMES
        )
    )
    requests.append(
        HttpRequest("Rendered JPEG of frame 5", f"{instance_path}/frames/5/rendered", headers=JPEG)
    )
    retrieval = corpus.retrieval_study
    requests.append(
        HttpRequest(
            f"Whole study, {len(retrieval.files)} instances, MB/s",
            f"/studies/{retrieval.study.study_instance_uid}",
            headers=WHOLE_STUDY,
            throughput=True,
        )
    )
    return requests


@dataclass
class RequestResult:
    """The timings of one request on one target in one repetition."""

    target: str
    request: str
    repetition: int
    count: int
    p50_ms: float
    p95_ms: float
    mb_per_s: float | None
    response_bytes: int

    def as_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "request": self.request,
            "repetition": self.repetition,
            "count": self.count,
            "p50_ms": round(self.p50_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "mb_per_s": None if self.mb_per_s is None else round(self.mb_per_s, 1),
            "response_bytes": self.response_bytes,
        }


class RequestFailedError(RuntimeError):
    """A target returned an error status for a measured request."""


def time_request(
    client: httpx.Client,
    base_url: str,
    target: str,
    request: HttpRequest,
    *,
    count: int,
    repetition: int,
) -> RequestResult:
    """Send ``request`` once untimed, to warm caches, then ``count`` times timed."""
    url = base_url + request.path
    response = client.get(url, params=request.params, headers=request.headers)
    if response.status_code not in (200, 204):
        raise RequestFailedError(
            f"{target}: GET {request.path} failed with status {response.status_code}: "
            f"{response.text[:300]}"
        )
    durations = []
    size = 0
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url, params=request.params, headers=request.headers)
        body = response.content
        durations.append(time.perf_counter() - started)
        size = len(body)
    median_s = statistics.median(durations)
    result = RequestResult(
        target=target,
        request=request.name,
        repetition=repetition,
        count=count,
        p50_ms=median_s * 1000,
        p95_ms=percentile(durations, 0.95) * 1000,
        mb_per_s=size / median_s / 1e6 if request.throughput else None,
        response_bytes=size,
    )
    logger.info(
        "%s %s: p50 %.1f ms, p95 %.1f ms", target, request.name, result.p50_ms, result.p95_ms
    )
    return result


def measure_requests(
    target: str,
    dicomweb_url: str,
    requests: list[HttpRequest],
    *,
    count: int,
    repetition: int,
) -> list[RequestResult]:
    """Time each of ``requests``; whole-study retrievals are sent a fifth as often."""
    with httpx.Client(timeout=300) as client:
        return [
            time_request(
                client,
                dicomweb_url,
                target,
                request,
                count=max(3, count // 5) if request.throughput else count,
                repetition=repetition,
            )
            for request in requests
        ]


def measure_throughput(
    dicomweb_urls: list[str], request: HttpRequest, *, clients: int, seconds: float
) -> tuple[int, float]:
    """Send ``request`` from ``clients`` threads for ``seconds``; return responses and seconds.

    Client ``i`` sends to ``dicomweb_urls[i % len(dicomweb_urls)]``, so the load spreads
    evenly over the services.
    """
    counts = [0] * clients
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def send(index: int) -> None:
        url = dicomweb_urls[index % len(dicomweb_urls)] + request.path
        with httpx.Client(timeout=60) as client:
            while time.perf_counter() < deadline:
                response = client.get(url, params=request.params, headers=request.headers)
                if response.status_code != 200:
                    errors.append(f"GET {url} failed with status {response.status_code}")
                    return
                counts[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=send, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RequestFailedError(errors[0])
    return sum(counts), elapsed
