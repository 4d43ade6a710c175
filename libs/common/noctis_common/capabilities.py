"""Retrieve Capabilities (PS3.18 8.9): OPTIONS on the DICOMweb service root.

The description lists the routes that the running app serves under ``/dicom-web``,
read from the app's OpenAPI description, so a service started alone (``python -m noctis_qido``)
describes only its own resources. It is a WADL document
(``application/vnd.sun.wadl+xml``), the form PS3.18 specifies, or, when the Accept
header requests ``application/json``, the same content as a JSON object.
NOTE: PS3.18 defines no JSON form of the description; the JSON one is a Noctis
convenience with the fields of the WADL elements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated
from xml.etree import ElementTree

from fastapi import APIRouter, Header, HTTPException, Request, status
from starlette.responses import JSONResponse, Response

WADL_MEDIA_TYPE = "application/vnd.sun.wadl+xml"
JSON_MEDIA_TYPE = "application/json"
WADL_NAMESPACE = "http://wadl.dev.java.net/2009/02"

DICOM = 'multipart/related; type="application/dicom"'
DICOM_JSON = "application/dicom+json"
OCTET_STREAM_PARTS = 'multipart/related; type="application/octet-stream"'
# Response media types by the last path segment of a resource, for GET.
GET_MEDIA_TYPES = {
    "metadata": [DICOM_JSON],
    "frames": [OCTET_STREAM_PARTS],
    "bulkdata": [OCTET_STREAM_PARTS],
    "rendered": ["image/jpeg", "image/png"],
    "thumbnail": ["image/jpeg", "image/png"],
    # Search resources of QIDO-RS (PS3.18 10.6.1).
    "studies": [DICOM_JSON],
    "series": [DICOM_JSON],
    "instances": [DICOM_JSON],
    # The change feed, a Noctis extension (noctis_events).
    "changefeed": ["application/json"],
}
# Resources addressed by a final template parameter that is not a UID.
PARAMETER_RESOURCES = ("frames", "bulkdata")
STORE_REQUEST_MEDIA_TYPES = [DICOM, 'multipart/related; type="application/dicom+json"']

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH"})

router = APIRouter(tags=["Capabilities"])


@dataclass(frozen=True)
class Method:
    """One HTTP method of a resource, with the media types of its bodies."""

    name: str
    request_media_types: list[str]
    response_media_types: list[str]


@dataclass(frozen=True)
class Resource:
    """One resource path below the service root, such as ``studies/{study}/metadata``."""

    path: str
    methods: list[Method]


def _last_segment(path: str) -> str:
    segments = [segment for segment in path.split("/") if segment]
    # Frames and bulk data end in a template parameter (frame list, tag path).
    if len(segments) >= 2 and segments[-1].startswith("{") and segments[-2] in PARAMETER_RESOURCES:
        return segments[-2]
    return segments[-1] if segments else ""


def _method(name: str, path: str) -> Method:
    segment = _last_segment(path)
    if name == "GET":
        if segment.startswith("{"):
            # A study, series or instance itself: Retrieve (PS3.18 10.4.1).
            return Method(name, [], [DICOM])
        return Method(name, [], GET_MEDIA_TYPES.get(segment, []))
    if name == "POST":
        return Method(name, STORE_REQUEST_MEDIA_TYPES, [DICOM_JSON])
    return Method(name, [], [])


def describe_resources(request: Request, prefix: str) -> list[Resource]:
    """List the app's routes below ``prefix`` as resources, each with its methods.

    The routes are read from the app's OpenAPI description, which lists every route
    registered with ``include_in_schema`` left on.
    """
    paths: dict[str, dict[str, object]] = request.app.openapi().get("paths", {})
    resources = []
    for full_path, operations in sorted(paths.items()):
        if not full_path.startswith(prefix + "/"):
            continue
        path = full_path[len(prefix) + 1 :]
        methods = sorted(name.upper() for name in operations if name.upper() in HTTP_METHODS)
        if path and methods:
            resources.append(Resource(path, [_method(name, path) for name in methods]))
    return resources


def render_wadl(base_url: str, resources: list[Resource]) -> bytes:
    """Render the resources as a WADL document (PS3.18 8.9, W3C WADL submission)."""
    ElementTree.register_namespace("", WADL_NAMESPACE)
    namespace = "{" + WADL_NAMESPACE + "}"
    application = ElementTree.Element(namespace + "application")
    root = ElementTree.SubElement(application, namespace + "resources", base=base_url + "/")
    for resource in resources:
        resource_element = ElementTree.SubElement(root, namespace + "resource", path=resource.path)
        for parameter in re.findall(r"{(\w+)}", resource.path):
            ElementTree.SubElement(
                resource_element,
                namespace + "param",
                name=parameter,
                style="template",
                type="xsd:string",
                required="true",
            )
        for method in resource.methods:
            method_element = ElementTree.SubElement(
                resource_element, namespace + "method", name=method.name
            )
            if method.request_media_types:
                request_element = ElementTree.SubElement(method_element, namespace + "request")
                for media_type in method.request_media_types:
                    ElementTree.SubElement(
                        request_element, namespace + "representation", mediaType=media_type
                    )
            response_element = ElementTree.SubElement(method_element, namespace + "response")
            for media_type in method.response_media_types:
                ElementTree.SubElement(
                    response_element, namespace + "representation", mediaType=media_type
                )
    body: bytes = ElementTree.tostring(application, encoding="utf-8", xml_declaration=True)
    return body


def render_json(base_url: str, resources: list[Resource]) -> dict[str, object]:
    """Render the resources as a JSON object with the fields of the WADL elements."""
    return {
        "base": base_url + "/",
        "resources": [
            {
                "path": resource.path,
                "methods": [
                    {
                        "name": method.name,
                        "requestMediaTypes": method.request_media_types,
                        "responseMediaTypes": method.response_media_types,
                    }
                    for method in resource.methods
                ],
            }
            for resource in resources
        ],
    }


def select_capabilities_media_type(accept: str | None) -> str:
    """Return the media type of the response, or raise 406 when the Accept header allows neither.

    WADL wins when the Accept header is missing or allows both forms equally.
    """
    if not accept:
        return WADL_MEDIA_TYPE
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media_range, *parameters = [part.strip() for part in item.split(";")]
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media_range = media_range.lower()
        if quality <= 0:
            continue
        if media_range in (WADL_MEDIA_TYPE, "*/*", "application/*"):
            candidate = WADL_MEDIA_TYPE
        elif media_range == JSON_MEDIA_TYPE:
            candidate = JSON_MEDIA_TYPE
        else:
            continue
        key = (-quality, position, candidate)
        if best is None or key < best:
            best = key
    if best is None:
        raise HTTPException(
            status.HTTP_406_NOT_ACCEPTABLE,
            f"the capabilities are available as {WADL_MEDIA_TYPE} or {JSON_MEDIA_TYPE}, "
            f"which the Accept header {accept!r} does not allow; request one of them",
        )
    return best[2]


AcceptHeader = Annotated[str | None, Header()]


def _retrieve_capabilities(request: Request, accept: str | None) -> Response:
    # Imported here because noctis_common.web imports this module to register the router.
    from noctis_common.web import DICOMWEB_PREFIX, dicomweb_base_url  # noqa: PLC0415

    media_type = select_capabilities_media_type(accept)
    base_url = dicomweb_base_url(request, request.app.state.settings)
    resources = describe_resources(request, DICOMWEB_PREFIX)
    if media_type == JSON_MEDIA_TYPE:
        return JSONResponse(render_json(base_url, resources))
    return Response(render_wadl(base_url, resources), media_type=WADL_MEDIA_TYPE)


@router.options("", include_in_schema=False)
def retrieve_capabilities(request: Request, accept: AcceptHeader = None) -> Response:
    """Retrieve Capabilities of the service root (PS3.18 8.9)."""
    return _retrieve_capabilities(request, accept)


@router.options("/", include_in_schema=False)
def retrieve_capabilities_slash(request: Request, accept: AcceptHeader = None) -> Response:
    """Retrieve Capabilities of the service root written with a trailing slash."""
    return _retrieve_capabilities(request, accept)
