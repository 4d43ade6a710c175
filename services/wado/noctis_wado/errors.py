"""HTTP errors of the WADO-RS service.

FastAPI sends each one as a response with its status code and a JSON ``detail``.
"""

from __future__ import annotations

from fastapi import HTTPException, status


class BadRequestError(HTTPException):
    """The request URL or a header is invalid (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(status.HTTP_400_BAD_REQUEST, message)


class ResourceNotFoundError(HTTPException):
    """The study, series, instance, frame or bulk data element does not exist (404)."""

    def __init__(self, message: str) -> None:
        super().__init__(status.HTTP_404_NOT_FOUND, message)


class NotAcceptableError(HTTPException):
    """No media type that the Accept header allows can be produced without transcoding (406)."""

    def __init__(self, message: str) -> None:
        super().__init__(status.HTTP_406_NOT_ACCEPTABLE, message)


class RangeNotSatisfiableError(HTTPException):
    """The requested byte range lies outside the value (416)."""

    def __init__(self, message: str, value_length: int) -> None:
        super().__init__(
            status.HTTP_416_RANGE_NOT_SATISFIABLE,
            message,
            headers={"Content-Range": f"bytes */{value_length}"},
        )


class StoredObjectError(HTTPException):
    """The stored object of an indexed instance is missing or cannot be read (500 or 503)."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        code = (
            status.HTTP_503_SERVICE_UNAVAILABLE
            if unavailable
            else status.HTTP_500_INTERNAL_SERVER_ERROR
        )
        super().__init__(code, message)


class ResponseAbortedError(RuntimeError):
    """Reading a stored object failed after the response status was sent.

    The only signal left to the client is a body cut off before its close delimiter,
    so this error is raised out of the body iterator and logged by the app.
    """
