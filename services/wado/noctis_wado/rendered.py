"""Rendered resources and thumbnails (PS3.18 10.4.1.1.3, 10.4.1.1.4 and 8.3.5).

A rendered instance or frame is decoded, passed through :mod:`noctis_wado.render`,
cropped and scaled to the viewport, and encoded as JPEG, PNG or GIF with Pillow.
Instance level renders frame 1, or every frame as an animated GIF. Study and series
level send a multipart body with one rendered part per image instance. A thumbnail is
a rendering scaled to fit 128 by 128 pixels unless a viewport is given. At study and
series level it renders the first image instance.

The ``annotation`` parameter is accepted and ignored: renderings carry no burned-in
text. Each image is built in memory.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sqlalchemy import select

from noctis_common.db import Database
from noctis_common.db.models import Instance
from noctis_common.storage import ObjectStore
from noctis_wado.accept import MediaRange, Offer, select_offer
from noctis_wado.errors import (
    BadRequestError,
    NotAcceptableError,
    ResourceNotFoundError,
    ResponseAbortedError,
)
from noctis_wado.lookup import StoredInstance
from noctis_wado.multipart import (
    MultipartResponse,
    frame_multipart,
    multipart_content_type,
    new_boundary,
)
from noctis_wado.render import (
    Image8,
    RenderError,
    VOIFunction,
    Window,
    frame_count,
    render_frame,
)
from noctis_wado.transcode import load_dataset

logger = logging.getLogger(__name__)

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
RENDERED_MEDIA_TYPES = (JPEG, PNG, GIF)
DEFAULT_JPEG_QUALITY = 90
THUMBNAIL_SIZE = 128
MAX_VIEWPORT_SIDE = 8192


@dataclass(frozen=True)
class Viewport:
    """The viewport parameter (PS3.18 8.3.5.1.3): output size and an optional source region."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class RenderingOptions:
    """The query parameters of a rendered resource (PS3.18 table 8.3.5-1)."""

    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_JPEG_QUALITY
    # WADO-URI's region (PS3.18 9.1.2.3.3): left, top, right, bottom as fractions.
    region: tuple[float, float, float, float] | None = None


def _numbers(text: str, parameter: str, count: Sequence[int]) -> list[float]:
    items = [item.strip() for item in text.split(",")]
    if len(items) not in count:
        expected = " or ".join(str(number) for number in count)
        raise BadRequestError(
            f"invalid {parameter} {text!r}: expected {expected} comma-separated values"
        )
    try:
        numbers = [float(item) if item else math.nan for item in items]
    except ValueError as error:
        raise BadRequestError(f"invalid {parameter} {text!r}: {error}") from error
    return numbers


def parse_window(text: str | None) -> Window | None:
    """Parse ``window=center,width,function``; the function is LINEAR, LINEAR_EXACT or SIGMOID."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if len(items) not in (2, 3):
        raise BadRequestError(
            f"invalid window {text!r}: give center,width,function such as 40,400,LINEAR"
        )
    center, width = _numbers(",".join(items[:2]), "window", (2,))
    function_text = items[2].upper() if len(items) == 3 else VOIFunction.LINEAR.value
    if function_text not in VOIFunction.__members__:
        raise BadRequestError(
            f"invalid window function {items[2]!r}: use LINEAR, LINEAR_EXACT or SIGMOID"
        )
    function = VOIFunction(function_text)
    minimum = 1.0 if function is VOIFunction.LINEAR else 0.0
    if not (math.isfinite(center) and math.isfinite(width)) or width <= minimum - 1e-12:
        raise BadRequestError(
            f"invalid window {text!r}: center and width must be numbers and the width "
            f"over {minimum:g}" + (" (at least 1 for LINEAR)" if minimum else "")
        )
    if function is VOIFunction.LINEAR and width < 1:
        raise BadRequestError(f"invalid window {text!r}: a LINEAR window width is at least 1")
    return Window(center, width, function)


def parse_viewport(text: str | None) -> Viewport | None:
    """Parse ``viewport=vw,vh`` or ``viewport=vw,vh,sx,sy,sw,sh``."""
    if text is None:
        return None
    numbers = _numbers(text, "viewport", (2, 6))
    if any(not math.isfinite(number) or number != int(number) for number in numbers):
        raise BadRequestError(f"invalid viewport {text!r}: every value must be an integer")
    width, height, *region = (int(number) for number in numbers)
    if not (0 < width <= MAX_VIEWPORT_SIDE and 0 < height <= MAX_VIEWPORT_SIDE):
        raise BadRequestError(
            f"invalid viewport {text!r}: width and height must be from 1 to {MAX_VIEWPORT_SIDE}"
        )
    if region:
        source_x, source_y, source_width, source_height = region
        if source_x < 0 or source_y < 0 or source_width <= 0 or source_height <= 0:
            raise BadRequestError(
                f"invalid viewport {text!r}: the source region needs sx, sy of 0 or more and "
                "a positive sw and sh; flipping is not supported"
            )
        return Viewport(width, height, (source_x, source_y, source_width, source_height))
    return Viewport(width, height)


def parse_quality(text: str | None) -> int:
    """Parse ``quality``, an integer from 1 to 100."""
    if text is None:
        return DEFAULT_JPEG_QUALITY
    try:
        quality = int(text)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise BadRequestError(f"invalid quality {text!r}: give an integer from 1 to 100")
    return quality


def parse_rendering_options(
    window: str | None, viewport: str | None, quality: str | None
) -> RenderingOptions:
    """Return the rendering options of a request's query parameters."""
    return RenderingOptions(parse_window(window), parse_viewport(viewport), parse_quality(quality))


def select_rendered_type(ranges: Sequence[MediaRange], resource: str) -> str:
    """Return the rendered media type that the Accept header selects; JPEG by default."""
    offers = [Offer(media_type) for media_type in RENDERED_MEDIA_TYPES]
    offer = select_offer(ranges, offers)
    if offer is None:
        raise NotAcceptableError(
            f"{resource} can be rendered only as {', '.join(RENDERED_MEDIA_TYPES)}; request "
            "one of them in the Accept header"
        )
    return offer.media_type


def apply_viewport(image: Image8, viewport: Viewport | None) -> Image8:
    """Crop ``image`` to the viewport's source region, then scale it to fit the viewport.

    The aspect ratio is kept: the result fits inside the viewport's width and height.
    """
    if viewport is None:
        return image
    if viewport.region is not None:
        source_x, source_y, source_width, source_height = viewport.region
        rows, columns = image.shape[:2]
        if source_x >= columns or source_y >= rows:
            raise BadRequestError(
                f"the viewport region starts at ({source_x},{source_y}), outside the "
                f"{columns}x{rows} image"
            )
        image = image[source_y : source_y + source_height, source_x : source_x + source_width]
    rows, columns = image.shape[:2]
    scale = min(viewport.width / columns, viewport.height / rows)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    resized = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def crop_fraction(image: Image8, region: tuple[float, float, float, float] | None) -> Image8:
    """Return the part of ``image`` within ``region``, given as fractions of its size."""
    if region is None:
        return image
    rows, columns = image.shape[:2]
    left, top, right, bottom = region
    first_column = min(int(left * columns), columns - 1)
    first_row = min(int(top * rows), rows - 1)
    last_column = max(math.ceil(right * columns), first_column + 1)
    last_row = max(math.ceil(bottom * rows), first_row + 1)
    return image[first_row:last_row, first_column:last_column]


def encode_images(images: Sequence[Image8], media_type: str, quality: int) -> bytes:
    """Encode ``images`` in ``media_type``; several images make an animated GIF."""
    pictures = [Image.fromarray(image) for image in images]
    buffer = io.BytesIO()
    if media_type == JPEG:
        pictures[0].save(buffer, format="JPEG", quality=quality)
    elif media_type == PNG:
        pictures[0].save(buffer, format="PNG")
    else:
        pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], loop=0)
    return buffer.getvalue()


def render_instance(
    store: ObjectStore,
    instance: StoredInstance,
    media_type: str,
    options: RenderingOptions,
    frame_number: int | None = None,
) -> bytes:
    """Return ``instance`` rendered in ``media_type``.

    ``frame_number`` (1-based) renders one frame. Without it, frame 1 is rendered, or
    every frame for GIF. Raises :class:`ResourceNotFoundError` for a frame out of range
    and :class:`NotAcceptableError` when the pixel data cannot be rendered.
    """
    dataset = load_dataset(store, instance)
    count = frame_count(dataset)
    if frame_number is not None and frame_number > count:
        raise ResourceNotFoundError(
            f"frame {frame_number} is out of range: instance {instance.sop_instance_uid} "
            f"has {count} frame{'s' if count != 1 else ''}, numbered from 1"
        )
    if frame_number is not None:
        indexes = [frame_number - 1]
    elif media_type == GIF:
        indexes = list(range(count))
    else:
        indexes = [0]
    try:
        images = [
            apply_viewport(
                crop_fraction(render_frame(dataset, index, options.window), options.region),
                options.viewport,
            )
            for index in indexes
        ]
    except RenderError as error:
        raise NotAcceptableError(
            f"instance {instance.sop_instance_uid} cannot be rendered: {error}; retrieve it "
            "as application/dicom instead"
        ) from error
    return encode_images(images, media_type, options.quality)


def _rendered_part(
    store: ObjectStore, instance: StoredInstance, media_type: str, options: RenderingOptions
) -> Iterator[bytes]:
    try:
        yield render_instance(store, instance, media_type, options)
    except (NotAcceptableError, ResourceNotFoundError) as error:
        raise ResponseAbortedError(
            f"rendering instance {instance.sop_instance_uid} failed, so the response was cut "
            f"off: {error.detail}"
        ) from error


def rendered_instances_response(
    store: ObjectStore,
    instances: Sequence[StoredInstance],
    media_type: str,
    options: RenderingOptions,
) -> MultipartResponse:
    """Return a multipart response with one rendering per instance, built while sent."""
    boundary = new_boundary()
    parts = (
        (media_type, _rendered_part(store, instance, media_type, options)) for instance in instances
    )
    return MultipartResponse(
        content_type=multipart_content_type(media_type, boundary),
        part_type=media_type,
        body=frame_multipart(boundary, parts),
    )


def thumbnail_options(viewport: str | None) -> RenderingOptions:
    """Return the options of a thumbnail: the viewport given, else 128 by 128 pixels."""
    parsed = parse_viewport(viewport)
    return RenderingOptions(viewport=parsed or Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE))


def has_pixel_data(database: Database, instance: StoredInstance) -> bool:
    """Return whether the index lists Rows for ``instance``, which images have."""
    with database.read_session() as session:
        rows = session.scalar(select(Instance.rows).where(Instance.id == instance.id))
    return rows is not None


def image_instances(
    database: Database, instances: Sequence[StoredInstance], resource: str
) -> list[StoredInstance]:
    """Return the instances that have pixel data (Rows in the index), in the same order.

    Raises :class:`ResourceNotFoundError` when none has.
    """
    ids = [instance.id for instance in instances]
    with database.read_session() as session:
        with_pixels = set(
            session.scalars(
                select(Instance.id).where(Instance.id.in_(ids), Instance.rows.is_not(None))
            )
        )
    images = [instance for instance in instances if instance.id in with_pixels]
    if not images:
        raise ResourceNotFoundError(f"{resource} has no image instances to render")
    return images
