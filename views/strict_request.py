"""The request class every view reads from: text that is not UTF-8 and JSON nested past
Python's recursion limit are a 400 with a message, never a silent change or a 500.

Werkzeug, left to itself, keeps undecodable percent-escapes as literal `%FF`, replaces bad
bytes in multipart fields with U+FFFD, drops a urlencoded body with raw bad bytes, and lets
a RecursionError out of `get_json(silent=True)`. Each of those would store or answer
something other than what was sent.
"""

from __future__ import annotations

import codecs
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import BadRequest
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.http import parse_options_header
from werkzeug.utils import cached_property


class NotUTF8(BadRequest):
    """A body, field or query parameter that is not valid UTF-8 text."""


class TooDeep(BadRequest):
    """A JSON body nested deeper than the parser can follow."""


def _field_error(name: str | None, where: str) -> NotUTF8:
    if name:
        return NotUTF8(description=f"'{name}' is not valid UTF-8.")
    return NotUTF8(description=f"A field name in the {where} is not valid UTF-8.")


def decode_pairs(raw: bytes, where: str) -> list[tuple[str, str]]:
    """`name=value&…` (query string or urlencoded body) decoded strictly, or NotUTF8 that
    names the field at fault."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotUTF8(description=f"The {where} is not valid UTF-8.") from None
    # Bad bytes behind percent-escapes come out as lone surrogates, which no valid UTF-8
    # text contains: each one marks a field that was not UTF-8.
    pairs = parse_qsl(text, keep_blank_values=True, errors="surrogateescape")
    for name, value in pairs:
        if not _encodable(name):
            raise _field_error(None, where)
        if not _encodable(value):
            raise _field_error(name, where)
    return pairs


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Multipart text fields are decoded by Werkzeug with errors="replace" under the name
# get_part_charset gives; this codec is UTF-8 that refuses instead, whatever it is told.
STRICT_UTF8 = "relay_strict_utf_8"


def _strict_utf8_decode(data: bytes, errors: str = "strict") -> tuple[str, int]:
    return codecs.utf_8_decode(data, "strict", True)


def _find_codec(name: str) -> codecs.CodecInfo | None:
    if name != STRICT_UTF8:
        return None
    utf8 = codecs.lookup("utf-8")
    return codecs.CodecInfo(utf8.encode, _strict_utf8_decode, name=STRICT_UTF8)


codecs.register(_find_codec)


class StrictMultiPartParser(MultiPartParser):
    """Text fields decoded as strict UTF-8 (unless the part declares ISO-8859-1)."""

    current_field: str | None = None

    def get_part_charset(self, headers: Headers) -> str:
        # Called just before the field's bytes are decoded: remember whose they are.
        self.current_field = parse_options_header(
            headers.get("content-disposition"))[1].get("name")
        charset = super().get_part_charset(headers)
        return charset if charset == "iso-8859-1" else STRICT_UTF8  # ASCII is UTF-8 too


class StrictFormDataParser(FormDataParser):
    def _parse_urlencoded(self, stream, mimetype, content_length, options):
        return stream, self.cls(decode_pairs(stream.read(), "form body")), self.cls()

    def _parse_multipart(self, stream, mimetype, content_length, options):
        parser = StrictMultiPartParser(stream_factory=self.stream_factory,
                                       max_form_memory_size=self.max_form_memory_size,
                                       max_form_parts=self.max_form_parts, cls=self.cls)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")  # an empty form, as Werkzeug does
        try:
            form, files = parser.parse(stream, boundary, content_length)
        except UnicodeDecodeError:
            raise _field_error(parser.current_field, "form body") from None
        return stream, form, files


class StrictRequest(Request):
    """Flask's request, refusing text that is not UTF-8 and JSON nested too deeply."""

    form_data_parser_class = StrictFormDataParser
    _json_checked = False
    _form_error: NotUTF8 | None = None

    @cached_property
    def args(self) -> MultiDict[str, str]:
        return self.parameter_storage_class(decode_pairs(self.query_string, "query string"))

    def check_text(self) -> None:
        """Refuse, before any view or rate limit reads it, a query string or body that is
        not UTF-8 or JSON nested too deeply (NotUTF8, TooDeep).

        A body is read here only when its declared length is within the app's limit: a
        view that allows more (an import) reads it itself, as strictly.
        """
        try:
            self.args  # noqa: B018  (parsing is the check)
        except NotUTF8:
            self.__dict__["args"] = self.parameter_storage_class()  # an error page sees none
            raise
        length, limit = self.content_length, self.max_content_length
        if length is None or (limit is not None and length > limit):
            return
        if self.is_json:
            self.get_json(silent=True)
        elif self.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            self._load_form_data()

    def _load_form_data(self) -> None:
        if self._form_error is not None:
            raise self._form_error  # the body is consumed: never a second, empty parse
        try:
            super()._load_form_data()
        except NotUTF8 as err:
            self._form_error = err
            raise

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        if (force or self.is_json) and not self._json_checked:
            try:
                self.get_data(cache=True).decode("utf-8")
            except UnicodeDecodeError:
                raise NotUTF8(description="The JSON body is not valid UTF-8.") from None
            self._json_checked = True
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise TooDeep(description="The JSON body is nested too deeply.") from None
