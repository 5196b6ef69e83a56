"""What an uploaded file is, read from its bytes (never its name), made safe to keep.

`read_file(name, data)` sniffs the type from magic numbers, re-encodes images with Pillow
(metadata stripped), extracts the text of a PDF with pypdf and of a text file as UTF-8, and
raises FileRefused (with an HTTP status and a message for people) for anything else.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp",
               "GIF": "image/gif"}
PDF_TYPE = "application/pdf"
TEXT_TYPES = {".md": "text/markdown", ".markdown": "text/markdown", ".csv": "text/csv",
              ".json": "application/json"}
# Names that claim a binary type: their bytes must be that type, or the file is refused.
CLAIMED = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
           ".webp": "image/webp", ".gif": "image/gif", ".pdf": PDF_TYPE,
           ".svg": "image/svg+xml", ".svgz": "image/svg+xml"}
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
              "image/gif": ".gif", PDF_TYPE: ".pdf"}
MAX_PIXELS = 50_000_000  # larger images are refused before they are decoded
_SVG = re.compile(rb"<svg[\s>]", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class FileRefused(Exception):
    """A file Relay does not keep: `status` is the HTTP status, `reason` a key the views
    word for people (views.uploads.REFUSALS), `params` the values the wording names."""

    def __init__(self, status: int, reason: str, **params: object) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.params = params


@dataclass(frozen=True)
class ReadFile:
    """A file as Relay keeps it: its name, sniffed type, bytes (re-encoded for an image),
    the text the model reads (text and PDF), and an image's size."""

    name: str
    type: str
    data: bytes
    text: str | None = None
    width: int | None = None
    height: int | None = None
    # A large image's smaller copy, the one models are sent (None: the image itself).
    model_data: bytes | None = None
    model_type: str | None = None


def sniff(data: bytes) -> str | None:
    """The type the bytes are, by their magic numbers: an image, PDF, SVG, text, or None."""
    head = data[:1024]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.lstrip().startswith(b"%PDF-"):
        return PDF_TYPE
    if _SVG.search(data[:4096]):
        return "image/svg+xml"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(text) else "text/plain"


def read_file(name: str, data: bytes) -> ReadFile:
    """The file to keep, or FileRefused saying why not (see the module's docstring)."""
    name = clean_name(name)
    if not data:
        raise FileRefused(400, "empty", name=name)
    kind = sniff(data)
    claimed = CLAIMED.get(os.path.splitext(name)[1].lower())
    if kind == "image/svg+xml" or claimed == "image/svg+xml":
        raise FileRefused(415, "svg", name=name)
    if kind is None or (claimed is not None and kind not in IMAGE_TYPES.values()
                        and kind != PDF_TYPE):
        raise FileRefused(415, "type", name=name)
    if kind.startswith("image/"):
        return _image(name, data)
    if kind == PDF_TYPE:
        return ReadFile(_named(name, kind), kind, data, text=_pdf_text(name, data))
    text = data.decode("utf-8-sig").replace("\r\n", "\n")
    kind = TEXT_TYPES.get(os.path.splitext(name)[1].lower(), "text/plain")
    return ReadFile(name, kind, data, text=text)


def clean_name(name: str | None) -> str:
    """A file name to show: its last path part, one line, at most 255 characters."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = _CONTROL.sub("", name).replace("\n", " ").replace("\r", " ").replace("\t", " ")
    name = name.strip()[:255]
    return name or "file"


def _named(name: str, kind: str) -> str:
    """The name, with the extension of its real type when it claimed another."""
    stem, extension = os.path.splitext(name)
    real = EXTENSIONS.get(kind)
    if real is None or CLAIMED.get(extension.lower()) in (None, kind):
        return name
    return (stem or "file") + real


def _image(name: str, data: bytes) -> ReadFile:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_TYPES:
                raise FileRefused(415, "type", name=name)
            kind = IMAGE_TYPES[image.format]
            if image.width * image.height > MAX_PIXELS:
                raise FileRefused(413, "pixels", name=name)
            image.load()
            clean = _without_metadata(ImageOps.exif_transpose(image) or image, image.format)
            out = io.BytesIO()
            if image.format == "JPEG":
                clean.save(out, "JPEG", quality=90, optimize=True)
            elif image.format == "WEBP":
                clean.save(out, "WEBP", quality=90)
            elif image.format == "GIF":
                clean.save(out, "GIF")
            else:
                clean.save(out, "PNG", optimize=False)
            model_type, model_data = _model_copy(clean, len(out.getbuffer()))
    except FileRefused:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise FileRefused(415, "image", name=name) from None
    return ReadFile(_named(name, kind), kind, out.getvalue(), width=clean.width,
                    height=clean.height, model_data=model_data, model_type=model_type)


# Models read images at about this size at most (larger ones are scaled down by the API, or
# refused: Anthropic takes 5 MB an image): a larger one is sent as a smaller copy.
MODEL_IMAGE_SIDE = 2048
MODEL_IMAGE_BYTES = 4 * 1024 * 1024


def _model_copy(image, size: int) -> tuple[str | None, bytes | None]:
    """A copy at most MODEL_IMAGE_SIDE pixels a side (JPEG, or PNG with transparency) for
    an image larger than models read; (None, None) for one they read as it is."""
    if max(image.size) <= MODEL_IMAGE_SIDE and size <= MODEL_IMAGE_BYTES:
        return None, None
    from PIL import Image

    copy = image.convert("RGBA") if image.mode in ("P", "LA", "1") else image.copy()
    copy.thumbnail((MODEL_IMAGE_SIDE, MODEL_IMAGE_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if copy.mode == "RGBA" and copy.getextrema()[3][0] < 255:
        copy.save(out, "PNG")
        return "image/png", out.getvalue()
    copy.convert("RGB").save(out, "JPEG", quality=85)
    return "image/jpeg", out.getvalue()


def _without_metadata(image, image_format: str):
    """The pixels alone: a new image, so no EXIF, text chunk or ICC profile comes along."""
    from PIL import Image

    mode = image.mode
    if image_format == "JPEG" and mode not in ("RGB", "L"):
        image, mode = image.convert("RGB"), "RGB"
    elif mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        image, mode = image.convert("RGBA"), "RGBA"
    clean = Image.new(mode, image.size)
    if mode == "P":
        palette = image.getpalette()
        if palette:
            clean.putpalette(palette)
        if "transparency" in image.info and image_format in ("PNG", "GIF"):
            clean.info["transparency"] = image.info["transparency"]
    clean.paste(image)
    return clean


def _pdf_text(name: str, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise FileRefused(400, "encrypted", name=name)
        return "\n\n".join((page.extract_text() or "").strip()
                           for page in reader.pages).strip()
    except FileRefused:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, AttributeError):
        raise FileRefused(400, "pdf", name=name) from None


def estimated_tokens(kind: str, text: str | None, width: int | None,
                     height: int | None) -> int:
    """About how many tokens the model reads of a file (llm.usage.file_tokens)."""
    from llm.usage import file_tokens

    return file_tokens(text, width, height)
