"""OHIF v3 against a Noctis archive, in Debian's chromium driven by playwright-core.

tests/ohif/setup.sh (run by .ci/run) installs chromium, playwright-core and the prebuilt
OHIF viewer (@ohif/app dist/). One module fixture stores the studies, serves OHIF with an
app-config.js that points at the archive and runs drive_ohif.mjs once over every step.
The archive runs with authentication on (NOCTIS_AUTH_MODE=internal): OHIF logs in
through the archive's login page (authorization code with PKCE) before the first step
and sends the bearer token with every DICOMweb request.
The tests below check what the driver recorded. Screenshots and the record of every request are
left in test-artifacts/ohif/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from tests.support import (
    REPOSITORY_ROOT,
    SHARED_DATA_DIR,
    ArchiveProcess,
    free_port,
    make_dataset,
    pydicom_test_files,
    running_archive,
)

OHIF_DIR = Path(__file__).resolve().parent
PACKAGE = json.loads((OHIF_DIR / "package.json").read_text())
OHIF_DIST = OHIF_DIR / "node_modules" / ".ohif-app" / PACKAGE["ohifApp"]["version"] / "dist"
DRIVER = OHIF_DIR / "drive_ohif.mjs"
ARTIFACTS_DIR = REPOSITORY_ROOT / "test-artifacts" / "ohif"
US_MULTIFRAME_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.3.1")
DRIVER_TIMEOUT_S = 600
OHIF_CLIENT_ID = "ohif-viewer"
ADMIN_USERNAME = "pacsadmin"
# The radiologist who logs in on the archive's login page in the browser.
VIEWER_USERNAME = "reader"
PASSWORD = "ohif test passphrase"

CHROMIUM = shutil.which("chromium")
NODE = shutil.which("node")
MISSING = [
    reason
    for reason, missing in [
        ("Debian's chromium is not installed", CHROMIUM is None),
        ("node is not installed", NODE is None),
        (
            "playwright-core is not installed in tests/ohif/node_modules",
            not (OHIF_DIR / "node_modules" / "playwright-core").is_dir(),
        ),
        (
            f"the OHIF viewer is not unpacked at {OHIF_DIST}",
            not (OHIF_DIST / "index.html").is_file(),
        ),
    ]
    if missing
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        bool(MISSING), reason="; ".join(MISSING) + " (run tests/ohif/setup.sh, as .ci/run does)"
    ),
]

NEEDS_SHARED_DATA = pytest.mark.skipif(
    not SHARED_DATA_DIR.is_dir(), reason=f"the shared DICOM data folder {SHARED_DATA_DIR} is absent"
)


def app_config(dicomweb_url: str, authority: str) -> str:
    """Return an app-config.js whose only data source is the archive under test.

    OHIF logs in at ``authority``, the archive's token service, as the public client
    OHIF_CLIENT_ID with the authorization code grant and PKCE.
    """
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "noctis",
        "oidc": [
            {
                "authority": authority,
                "client_id": OHIF_CLIENT_ID,
                "redirect_uri": "/callback",
                # Not "/": OHIF routes its post-logout URI to the sign-out callback,
                # which would take over the study list.
                "post_logout_redirect_uri": "/logout-redirect.html",
                "response_type": "code",
                "scope": "openid search retrieve",
            }
        ],
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "noctis",
                "configuration": {
                    "friendlyName": "Noctis",
                    "name": "noctis",
                    "wadoUriRoot": dicomweb_url,
                    "qidoRoot": dicomweb_url,
                    "wadoRoot": dicomweb_url,
                    "qidoSupportsIncludeField": True,
                    "supportsFuzzyMatching": True,
                    "supportsWildcard": True,
                    "imageRendering": "wadors",
                    # OHIF's default: the study browser requests
                    # .../instances/{uid}/thumbnail?accept=image/jpeg (PS3.18 10.4.1.1.4).
                    "thumbnailRendering": "thumbnail",
                    "enableStudyLazyLoad": True,
                    "staticWado": False,
                    "singlepart": False,
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class ViewerHandler(SimpleHTTPRequestHandler):
    """Serves OHIF's dist/, the generated app-config.js, and index.html for OHIF's routes."""

    app_config_js: ClassVar[bytes] = b""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(self.app_config_js)))
            self.end_headers()
            self.wfile.write(self.app_config_js)
            return
        if not Path(self.translate_path(path)).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Studies:
    """What the fixture stored, by the role each study plays in the checks."""

    filter_names: dict[str, str] = field(default_factory=dict)
    viewer_steps: dict[str, str] = field(default_factory=dict)
    ct_with_segmentation: str | None = None


def store_instances(archive: ArchiveProcess, datasets: list[bytes]) -> None:
    """Store Part 10 files with one STOW-RS request (PS3.18 10.5), as the administrator."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        for data in datasets
    )
    body += f"--{boundary}--\r\n".encode()
    response = httpx.post(
        f"{archive.dicomweb_url}/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            "Authorization": f"Bearer {administrator_token(archive)}",
        },
        timeout=60,
    )
    assert response.status_code == 200, f"STOW-RS failed: {response.status_code} {response.text}"


def administrator_token(archive: ArchiveProcess) -> str:
    response = httpx.post(
        f"{archive.http_url}/auth/token",
        data={"grant_type": "password", "username": ADMIN_USERNAME, "password": PASSWORD},
        timeout=30,
    )
    assert response.status_code == 200, f"administrator login failed: {response.text}"
    token: str = response.json()["access_token"]
    return token


def create_administrator(data_dir: Path) -> None:
    """Create the first administrator with ``python -m noctis_auth create-admin``."""
    completed = subprocess.run(
        [sys.executable, "-m", "noctis_auth", "create-admin", "--username", ADMIN_USERNAME],
        input=PASSWORD,
        capture_output=True,
        text=True,
        env={**os.environ, "NOCTIS_DATA_DIR": str(data_dir), "NOCTIS_AUTH_MODE": "internal"},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, f"create-admin failed: {completed.stderr}"


def register_viewer(archive: ArchiveProcess, viewer_url: str) -> None:
    """Register OHIF as a public client and create the radiologist who logs in there."""
    headers = {"Authorization": f"Bearer {administrator_token(archive)}"}
    client = httpx.post(
        f"{archive.http_url}/auth/admin/clients",
        json={
            "client_id": OHIF_CLIENT_ID,
            "name": "OHIF Viewer",
            "public": True,
            "grant_types": ["authorization_code", "refresh_token"],
            "redirect_uris": [f"{viewer_url}/callback"],
            "post_logout_redirect_uris": [f"{viewer_url}/logout-redirect.html"],
        },
        headers=headers,
        timeout=30,
    )
    assert client.status_code == 201, f"registering OHIF failed: {client.text}"
    user = httpx.post(
        f"{archive.http_url}/auth/admin/users",
        json={"username": VIEWER_USERNAME, "password": PASSWORD, "roles": ["radiologist"]},
        headers=headers,
        timeout=30,
    )
    assert user.status_code == 201, f"creating the viewer user failed: {user.text}"


def part10_bytes(dataset: Dataset, folder: Path) -> bytes:
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def generated_series(folder: Path, count: int, **attributes: Any) -> tuple[str, list[bytes]]:
    study_instance_uid = generate_uid()
    series_instance_uid = generate_uid()
    files = [
        part10_bytes(
            make_dataset(
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                instance_number=number,
                rows=64,
                columns=64,
                **attributes,
            ),
            folder,
        )
        for number in range(1, count + 1)
    ]
    return study_instance_uid, files


def ultrasound_cine(folder: Path) -> tuple[str, bytes]:
    """An 8-bit, 10-frame US Multi-frame Image with a bar that moves from frame to frame."""
    dataset = make_dataset(modality="US", patient_name="CINEUS", rows=64, columns=64)
    dataset.SOPClassUID = US_MULTIFRAME_IMAGE_STORAGE
    dataset.file_meta.MediaStorageSOPClassUID = US_MULTIFRAME_IMAGE_STORAGE
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    frames = 10
    dataset.NumberOfFrames = frames
    dataset.FrameTime = 100
    dataset.FrameIncrementPointer = 0x00181063
    dataset.PixelData = bytes(
        255 if (column // 6) == frame else (row * 4) % 256
        for frame in range(frames)
        for row in range(64)
        for column in range(64)
    )
    return str(dataset.StudyInstanceUID), part10_bytes(dataset, folder)


def store_studies(archive: ArchiveProcess, folder: Path) -> Studies:
    studies = Studies()
    for patient_name, study_date in [
        ("ALPHAFILTER", "20200105"),
        ("BETAFILTER", "20210610"),
        ("GAMMAOTHER", "20230101"),
    ]:
        study_instance_uid, files = generated_series(
            folder, 2, patient_name=patient_name, study_date=study_date
        )
        store_instances(archive, files)
        studies.filter_names[patient_name] = study_instance_uid

    study_instance_uid, file = ultrasound_cine(folder)
    store_instances(archive, [file])
    studies.viewer_steps["ultrasound-cine"] = study_instance_uid

    if SHARED_DATA_DIR.is_dir():
        mr_files = sorted((SHARED_DATA_DIR / "mr-prostate-adc-20slice").glob("MR_*.dcm"))
        compressed = [SHARED_DATA_DIR / "wg04-compression" / "CT1_J2KR.dcm"]
        compressed_ls = [SHARED_DATA_DIR / "multiframe" / "eMR_10frame_jpegls.dcm"]
        ct_files = sorted((SHARED_DATA_DIR / "ct-liver-3slice").glob("CT_*.dcm"))
        segmentation = SHARED_DATA_DIR / "ct-liver-3slice" / "SEG_liver.dcm"
        store_instances(archive, [path.read_bytes() for path in [*ct_files, segmentation]])
        studies.ct_with_segmentation = read_study_uid(ct_files[0])
        studies.viewer_steps["ct-with-seg"] = studies.ct_with_segmentation
        store_instances(archive, [path.read_bytes() for path in compressed_ls])
        studies.viewer_steps["compressed-jpeg-ls"] = read_study_uid(compressed_ls[0])
        echo = SHARED_DATA_DIR / "multiframe" / "US-PAL-8-10x-echo.dcm"
        store_instances(archive, [echo.read_bytes()])
        studies.viewer_steps["ultrasound-palette-cine"] = read_study_uid(echo)
    else:
        mr_study, mr_bytes = generated_series(folder, 5, modality="MR", patient_name="MRGEN")
        store_instances(archive, mr_bytes)
        studies.viewer_steps["mr-series"] = mr_study
        compressed = [path for path in pydicom_test_files() if path.name == "MR2_J2KR.dcm"]
        mr_files = []
    if mr_files:
        store_instances(archive, [path.read_bytes() for path in mr_files])
        studies.viewer_steps["mr-series"] = read_study_uid(mr_files[0])
    if compressed:
        store_instances(archive, [path.read_bytes() for path in compressed])
        studies.viewer_steps["compressed-jpeg2000"] = read_study_uid(compressed[0])
    return studies


def read_study_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


@dataclass
class OhifRun:
    studies: Studies
    archive_url: str
    result: dict[str, Any]

    def step(self, name: str) -> dict[str, Any]:
        steps = {step["name"]: step for step in self.result["steps"]}
        if name not in steps:
            pytest.skip(f"no OHIF step {name!r} ran (its data is not available here)")
        step: dict[str, Any] = steps[name]
        return step


@pytest.fixture(scope="module")
def ohif_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OhifRun]:
    root = tmp_path_factory.mktemp("ohif")
    http_port = free_port()
    archive_url = f"http://127.0.0.1:{http_port}"
    viewer_url = f"http://127.0.0.1:{free_port()}"
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS_DIR.glob("*.png"):
        old.unlink()
    create_administrator(root / "var")
    for archive in running_archive(
        root / "var",
        http_port=http_port,
        extra_env={
            "NOCTIS_PUBLIC_BASE_URL": archive_url,
            "NOCTIS_AUTH_MODE": "internal",
            # One login lasts the whole run, however slow the machine.
            "NOCTIS_AUTH_ACCESS_TOKEN_LIFETIME_S": "3600",
        },
    ):
        register_viewer(archive, viewer_url)
        studies = store_studies(archive, root)
        handler = type(
            "NoctisViewerHandler",
            (ViewerHandler,),
            {"app_config_js": app_config(archive.dicomweb_url, f"{archive_url}/auth").encode()},
        )
        server = ThreadingHTTPServer(
            ("127.0.0.1", int(viewer_url.rsplit(":", 1)[1])),
            partial(handler, directory=str(OHIF_DIST)),
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            steps: list[dict[str, Any]] = [
                {
                    "name": "study-list",
                    "kind": "worklist",
                    "path": "/",
                    "waitForText": "GAMMAOTHER",
                },
                {
                    "name": "study-list-patient-name",
                    "kind": "worklist",
                    "path": "/?patientName=ALPHA",
                    "waitForText": "ALPHAFILTER",
                },
                {
                    "name": "study-list-date-range",
                    "kind": "worklist",
                    "path": "/?startDate=20210101&endDate=20211231",
                    "waitForText": "BETAFILTER",
                },
            ]
            for name, study_instance_uid in studies.viewer_steps.items():
                step: dict[str, Any] = {
                    "name": name,
                    "kind": "viewer",
                    "path": f"/viewer?StudyInstanceUIDs={study_instance_uid}",
                }
                if study_instance_uid == studies.ct_with_segmentation:
                    step["segmentationText"] = "SEG"
                steps.append(step)
            plan_path = root / "plan.json"
            result_path = ARTIFACTS_DIR / "result.json"
            plan_path.write_text(
                json.dumps(
                    {
                        "viewerUrl": viewer_url,
                        "login": {"username": VIEWER_USERNAME, "password": PASSWORD},
                        "chromiumPath": CHROMIUM,
                        "artifactsDir": str(ARTIFACTS_DIR),
                        "steps": steps,
                    }
                )
            )
            completed = subprocess.run(
                [str(NODE), str(DRIVER), str(plan_path), str(result_path)],
                cwd=OHIF_DIR,
                capture_output=True,
                text=True,
                timeout=DRIVER_TIMEOUT_S,
            )
            assert completed.returncode == 0, f"drive_ohif.mjs failed:\n{completed.stderr}"
            result = json.loads(result_path.read_text())
        finally:
            server.shutdown()
            server.server_close()
        yield OhifRun(studies=studies, archive_url=archive_url, result=result)


def pixels_drawn(step: dict[str, Any]) -> bool:
    return any(canvas["distinctColours"] >= 3 for canvas in step["canvases"])


def test_study_list_shows_every_study(ohif_run: OhifRun) -> None:
    body = ohif_run.step("study-list")["bodyText"]
    for patient_name in ohif_run.studies.filter_names:
        assert patient_name in body, f"{patient_name} missing from the study list"


def test_patient_name_filter_keeps_matches(ohif_run: OhifRun) -> None:
    body = ohif_run.step("study-list-patient-name")["bodyText"]
    assert "ALPHAFILTER" in body
    assert "BETAFILTER" not in body
    assert "GAMMAOTHER" not in body


def test_date_range_filter_keeps_matches(ohif_run: OhifRun) -> None:
    body = ohif_run.step("study-list-date-range")["bodyText"]
    assert "BETAFILTER" in body
    assert "ALPHAFILTER" not in body
    assert "GAMMAOTHER" not in body


@pytest.mark.parametrize(
    "step_name",
    [
        "mr-series",
        "ultrasound-cine",
        "compressed-jpeg2000",
        pytest.param("compressed-jpeg-ls", marks=NEEDS_SHARED_DATA),
        pytest.param("ct-with-seg", marks=NEEDS_SHARED_DATA),
        pytest.param("ultrasound-palette-cine", marks=NEEDS_SHARED_DATA),
    ],
)
def test_viewport_draws_real_pixels(ohif_run: OhifRun, step_name: str) -> None:
    step = ohif_run.step(step_name)
    assert pixels_drawn(step), f"{step_name}: canvases {step['canvases']}; {step.get('error')}"


@NEEDS_SHARED_DATA
def test_segmentation_overlay_adds_colour(ohif_run: OhifRun) -> None:
    step = ohif_run.step("ct-with-seg")
    assert step["segmentationLoaded"], f"no coloured pixels: {step['canvases']}"


def test_no_dicomweb_request_fails(ohif_run: OhifRun) -> None:
    # net::ERR_ABORTED is the viewer cancelling its own prefetch when the next step
    # navigates away. Any other failure, and any status >= 400, counts against the archive.
    failed = [
        entry
        for entry in ohif_run.result["failedResponses"] + ohif_run.result["failedRequests"]
        if entry["url"].startswith(ohif_run.archive_url)
        and entry.get("failure") != "net::ERR_ABORTED"
    ]
    assert failed == []


def test_study_browser_loads_server_thumbnails(ohif_run: OhifRun) -> None:
    thumbnails = [
        entry
        for entry in ohif_run.result["requests"]
        if entry["url"].startswith(ohif_run.archive_url) and "/thumbnail" in entry["url"]
    ]
    assert thumbnails, "OHIF requested no /thumbnail resource"
    assert all(entry["status"] == 200 for entry in thumbnails), thumbnails


def test_no_request_leaves_loopback(ohif_run: OhifRun) -> None:
    assert ohif_run.result["blockedRequests"] == []


def test_login_page_leads_to_viewer(ohif_run: OhifRun) -> None:
    login = ohif_run.result["login"]
    assert login["formShown"], login
    assert login["formUrl"].startswith(f"{ohif_run.archive_url}/auth/authorize?"), login
    assert login.get("error") is None, login
    assert not login["landedAt"].startswith(ohif_run.archive_url), login


def test_every_dicomweb_request_carries_token(ohif_run: OhifRun) -> None:
    dicomweb = [
        entry
        for entry in ohif_run.result["requests"]
        if entry["url"].startswith(f"{ohif_run.archive_url}/dicom-web")
        and entry["method"] != "OPTIONS"
    ]
    assert dicomweb, "OHIF made no DICOMweb request"
    without_token = [entry["url"] for entry in dicomweb if not entry["bearer"]]
    assert without_token == []
