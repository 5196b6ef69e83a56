"""The SSE wire contract: exact bytes, browser-faithful parsing, and exact round trips."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.sse_client import Event, SSEConnection, SSEParser, stream_events
from streaming.sse import ServerSentEvent, comment, decode_delta, delta_event, escape_text

# Pieces that stress the encoder: SSE line terminators, text that looks like SSE fields or
# comments, entities that must survive literally, a BOM, astral and combining characters,
# and control characters.
TRICKY_PIECES = [
    "\r", "\n", "\r\n", "\n\r", "data:", "data: x", "id:", "id: 7", "event:", "retry: 1",
    ":", ": comment", " ", "  lead", "&amp;", "&#13;", "&lt;", "&", "<", ">", '"', "'",
    "\ufeff", "\U0001f600", "e\u0301", "\u0000", "\x01", "\x1b[0m", "\x7f", "\x85",
    "\u2028", "\ufffd",
]  # fmt: skip

tricky_text = st.lists(st.one_of(st.text(), st.sampled_from(TRICKY_PIECES)), max_size=12).map(
    "".join
)


def split_randomly(data: st.DataObject, raw: bytes) -> list[bytes]:
    """Split ``raw`` at drawn offsets (anywhere, including inside UTF-8 sequences and CRLF)."""
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=8), "cuts")
    )
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in pairwise(bounds)]


def feed_all(chunks: list[bytes], parser: SSEParser | None = None) -> list[Event]:
    parser = parser or SSEParser()
    events: list[Event] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


# --- encoder: exact wire bytes ------------------------------------------------------------


def test_escape_text_escapes_html_specials_and_cr_but_keeps_lf():
    assert escape_text("<a href=\"x\">'&'</a>\r\n") == (
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;&#13;\n"
    )


def test_escape_text_does_not_double_escape_entities_in_the_text():
    assert escape_text("&amp;&#13;") == "&amp;amp;&amp;#13;"


def test_delta_event_wire_bytes_escape_html_and_split_crlf_into_data_lines():
    event = delta_event('<b>&"\'\r\nx', 9)

    assert event.encode() == (
        b"event: delta\nid: 9\ndata: &lt;b&gt;&amp;&quot;&#39;&#13;\ndata: x\n\n"
    )


def test_multiline_fragment_becomes_one_data_line_per_line():
    event = ServerSentEvent(data='<div class="m">\n  <p>hi</p>\n</div>', event="message")

    assert str(event) == (
        'event: message\ndata: <div class="m">\ndata:   <p>hi</p>\ndata: </div>\n\n'
    )


def test_data_ending_with_lf_gets_an_empty_last_data_line():
    assert str(ServerSentEvent(data="a\n")) == "data: a\ndata: \n\n"


def test_empty_data_is_still_one_data_line_so_the_event_dispatches():
    assert str(ServerSentEvent()) == "data: \n\n"
    assert feed_all([ServerSentEvent().encode()]) == [Event(event="message", data="")]


def test_cr_left_in_fragment_data_is_written_as_a_character_reference():
    assert str(ServerSentEvent(data="a\rb\r\nc")) == "data: a&#13;b&#13;\ndata: c\n\n"


def test_retry_event_and_id_lines_come_before_data_in_fixed_order():
    event = ServerSentEvent(data="x", event="done", id="42", retry=1500)

    assert event.encode() == b"retry: 1500\nevent: done\nid: 42\ndata: x\n\n"


def test_encode_is_utf8():
    assert delta_event("\u00e9\U0001f600", 2).encode() == (
        b"event: delta\nid: 2\ndata: \xc3\xa9\xf0\x9f\x98\x80\n\n"
    )


def test_comment_is_a_single_ignored_line_followed_by_a_blank_line():
    assert comment() == ": keep-alive\n\n"
    assert comment("ping") == ": ping\n\n"
    assert feed_all([comment().encode()]) == []


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_id_and_event_with_line_breaks_or_nul_are_rejected(bad):
    with pytest.raises(ValueError, match="must not contain CR, LF or NUL"):
        ServerSentEvent(data="x", id=bad)
    with pytest.raises(ValueError, match="must not contain CR, LF or NUL"):
        ServerSentEvent(data="x", event=bad)
    with pytest.raises(ValueError, match="must not contain CR, LF or NUL"):
        comment(bad)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "10"])
def test_retry_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="retry must be a non-negative int"):
        ServerSentEvent(data="x", retry=bad)


def test_decode_delta_inverts_escape_text_for_a_known_tricky_string():
    text = "&amp; &#13; <x> \"q\" 'a' \r\n data: \u0000"
    assert decode_delta(escape_text(text)) == text


# --- encoder: round-trip properties -------------------------------------------------------


@settings(max_examples=400)
@given(text=tricky_text, data=st.data())
def test_any_text_round_trips_through_delta_encode_parse_decode(text, data):
    raw = delta_event(text, len(text)).encode()

    events = feed_all(split_randomly(data, raw))

    assert len(events) == 1
    assert events[0].event == "delta"
    assert events[0].id == str(len(text))
    assert decode_delta(events[0].data) == text


@settings(max_examples=200)
@given(texts=st.lists(tricky_text, min_size=1, max_size=6), data=st.data())
def test_consecutive_deltas_decode_and_concatenate_back_exactly(texts, data):
    ends = []
    total = 0
    for text in texts:
        total += len(text)
        ends.append(total)
    raw = b"".join(
        delta_event(text, end).encode() + comment().encode()
        for text, end in zip(texts, ends, strict=True)
    )

    events = feed_all(split_randomly(data, raw))

    assert [decode_delta(e.data) for e in events] == texts
    assert [e.id for e in events] == [str(end) for end in ends]
    assert "".join(decode_delta(e.data) for e in events) == "".join(texts)


# --- parser: the WHATWG event-stream interpretation ---------------------------------------


def test_parser_accepts_cr_only_line_endings():
    events = feed_all([b"event: a\rdata: 1\rdata: 2\r\rdata: 3\r\r"])

    assert events == [Event(event="a", data="1\n2"), Event(event="message", data="3")]


def test_parser_treats_crlf_split_across_chunks_as_one_line_ending():
    parser = SSEParser()

    first = parser.feed(b"data: x\r")
    second = parser.feed(b"\n\r")
    third = parser.feed(b"\ndata: y\r\n\r\n")

    assert first == []
    assert second == [Event(data="x")]
    assert third == [Event(data="y")]


def test_parser_dispatches_on_cr_without_waiting_for_a_possible_lf():
    parser = SSEParser()

    assert parser.feed(b"data: x\n\r") == [Event(data="x")]
    assert parser.feed(b"data: y\n\n") == [Event(data="y")]


def test_parser_reassembles_utf8_split_inside_a_code_point():
    raw = "data: \u00e9\U0001f600\n\n".encode()
    parser = SSEParser()

    events = [e for i in range(len(raw)) for e in parser.feed(raw[i : i + 1])]

    assert events == [Event(data="\u00e9\U0001f600")]


def test_parser_strips_one_leading_bom_only():
    bom = "\ufeff".encode()

    assert feed_all([bom[:1], bom[1:] + b"data: a\n\n"]) == [Event(data="a")]
    # A second BOM is part of the first line, so it is an unknown field and is ignored.
    assert feed_all([bom + bom + b"data: a\n\ndata: b\n\n"]) == [Event(data="b")]


def test_parser_ignores_comments_and_unknown_fields():
    raw = b": hello\n:data: no\nfoo: bar\ndata: yes\n\n"

    assert feed_all([raw]) == [Event(data="yes")]


def test_parser_removes_exactly_one_space_after_the_colon():
    assert feed_all([b"data:x\ndata: y\ndata:  z\n\n"]) == [Event(data="x\ny\n z")]


def test_parser_treats_a_line_without_colon_as_a_field_with_empty_value():
    assert feed_all([b"data\ndata\n\n"]) == [Event(data="\n")]


def test_parser_does_not_dispatch_an_event_with_empty_data_buffer():
    parser = SSEParser()

    assert parser.feed(b"event: x\n\nid: 3\n\ndata: a\n\n") == [
        Event(event="message", data="a", id="3")
    ]


def test_parser_keeps_last_event_id_across_events_and_commits_it_at_blank_lines():
    parser = SSEParser()

    events = parser.feed(b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 9\n\n")

    assert events == [Event(data="a", id="1"), Event(data="b", id="1"), Event(data="c", id="")]
    assert parser.last_event_id == "9"


def test_parser_ignores_an_id_containing_nul():
    parser = SSEParser()

    assert parser.feed(b"id: 1\n\nid: 2\x003\ndata: a\n\n") == [Event(data="a", id="1")]
    assert parser.last_event_id == "1"


def test_parser_sets_retry_only_from_all_digit_values():
    parser = SSEParser()

    parser.feed(b"retry: 2500\n\n")
    assert parser.retry == 2500
    for bad in (b"10ms", b"-5", b"", b"1 ", b"\xd9\xa1"):  # the last is ARABIC-INDIC DIGIT ONE
        parser.feed(b"retry: " + bad + b"\n")
        assert parser.retry == 2500


def test_parser_discards_an_unterminated_event_at_end_of_input():
    assert feed_all([b"data: a\n\ndata: b\n"]) == [Event(data="a")]


def test_parser_replaces_invalid_utf8_like_a_browser():
    assert feed_all([b"data: a\xffb\n\n"]) == [Event(data="a\ufffdb")]


# The parser must give the same events however the bytes are split, and must agree with a
# direct reading of the spec applied to the whole input at once.
STREAM_TOKENS = [
    b"data", b"data:", b"data: ", b"event: e", b"id: 1", b"id", b"id: a\x00b", b"retry: 7",
    b"retry: x", b":c", b"x", b" ", b":", b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xc3\xa9",
    b"\xf0\x9f\x98\x80", b"\xff", b"\xe2\x82",
]  # fmt: skip


def reference_parse(raw: bytes) -> tuple[list[Event], str | None, int | None]:
    text = raw.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the unterminated tail is never processed
    events, data, event_type, id_buffer, last_id, retry = [], None, "", None, None, None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data is not None:
                events.append(Event(event=event_type or "message", data=data[:-1], id=last_id))
            data, event_type = None, ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data = (data or "") + value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            id_buffer = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            retry = int(value)
    return events, last_id, retry


@settings(max_examples=400)
@given(tokens=st.lists(st.sampled_from(STREAM_TOKENS), max_size=40), data=st.data())
def test_parser_matches_the_spec_for_any_split_of_any_stream(tokens, data):
    raw = b"".join(tokens)
    parser = SSEParser()

    events = feed_all(split_randomly(data, raw), parser)

    assert (events, parser.last_event_id, parser.retry) == reference_parse(raw)


# --- client: a live stream over HTTP ------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Test endpoints: /stream waits for the test between events, /forever streams until gone."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keeps pytest output quiet
        pass

    def _start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_chunk(self, payload: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, dict(self.headers)))
        if self.path == "/stream":
            self._start_stream()
            self._send_chunk(delta_event("Hello, ", 7).encode())
            server.release.wait(5)
            # The second event arrives split inside a multi-byte character.
            raw = delta_event("w\u00f6rld", 12).encode()
            cut = raw.index(b"\xc3") + 1
            self._send_chunk(raw[:cut])
            self._send_chunk(raw[cut:])
            self._send_chunk(b"")
        elif self.path == "/forever":
            self._start_stream()
            try:
                for n in range(1000):
                    self._send_chunk(delta_event("x", n + 1).encode())
                    time.sleep(0.01)
            except OSError:
                server.disconnected.set()
        elif self.path == "/hang-404":
            # A non-200 without a declared length whose connection stays open.
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"not here")
            self.wfile.flush()
            server.release.wait(5)
            self.close_connection = True
        else:
            body = b"no such stream"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.release = threading.Event()
    httpd.disconnected = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def _url(server: ThreadingHTTPServer, path: str) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}{path}"


def test_client_yields_each_event_before_the_body_ends(server):
    with SSEConnection(_url(server, "/stream"), timeout=5) as conn:
        events = iter(conn)
        first = next(events)  # would block for 5 s if the client waited for the whole body
        server.release.set()
        rest = list(events)

    assert conn.status == 200
    assert conn.headers["Content-Type"] == "text/event-stream"
    assert first == Event(event="delta", data="Hello, ", id="7")
    assert rest == [Event(event="delta", data="w\u00f6rld", id="12")]
    assert conn.closed and not conn.truncated
    assert conn.last_event_id == "12"


def test_client_sends_accept_cookie_last_event_id_and_extra_headers(server):
    server.release.set()
    list(
        SSEConnection(
            _url(server, "/stream?x=1"),
            headers={"X-Test": "yes"},
            cookies="session=abc",
            last_event_id="7",
            timeout=5,
        )
    )

    path, headers = server.requests[0]
    assert path == "/stream?x=1"
    assert headers["Accept"] == "text/event-stream"
    assert headers["Cookie"] == "session=abc"
    assert headers["Last-Event-ID"] == "7"
    assert headers["X-Test"] == "yes"


def test_client_non_200_sets_status_and_yields_nothing(server):
    conn = SSEConnection(_url(server, "/missing"), timeout=5)

    assert conn.status == 404
    assert conn.body == b"no such stream"
    assert list(conn) == []
    assert conn.closed


def test_client_non_200_without_length_does_not_wait_for_the_body(server):
    started = time.monotonic()
    conn = SSEConnection(_url(server, "/hang-404"), timeout=5)

    assert list(conn) == []
    assert conn.status == 404
    assert conn.body == b""
    assert time.monotonic() - started < 2


def test_breaking_out_of_stream_events_disconnects_from_the_server(server):
    received = []
    for event in stream_events(_url(server, "/forever"), timeout=5):
        received.append(event.id)
        if len(received) == 2:
            break

    assert received == ["1", "2"]
    assert server.disconnected.wait(5)
