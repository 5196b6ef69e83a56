"""Reading the Chat Completions stream from raw bytes, however the network splits them."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm import chat_sse


def wire(payloads: list[dict], newline: str = "\n", done: bool = True) -> bytes:
    out = "".join(f"data: {json.dumps(p)}{newline}{newline}" for p in payloads)
    if done:
        out += f"data: [DONE]{newline}{newline}"
    return out.encode()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


payload = st.builds(lambda text: {"choices": [{"index": 0, "delta": {"content": text}}]},
                    st.text(max_size=40))


# Input generation is cheap, but the first test after the browser suite can find the machine
# busy; a slow draw there says nothing about the parser.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(payload, max_size=8), st.sampled_from(["\n", "\r\n", "\r"]),
       st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_split_of_the_stream_gives_back_every_event_exactly(payloads, newline, cuts):
    data = wire(payloads, newline)
    assert list(chat_sse.chunks(split_at(data, cuts))) == payloads


def test_done_ends_the_stream_and_what_follows_is_not_read():
    data = wire([{"a": 1}]) + b'data: {"after": true}\n\n'
    assert list(chat_sse.chunks([data])) == [{"a": 1}]


def test_comments_other_fields_and_multiline_data_follow_the_sse_rules():
    data = b': keep-alive\nevent: message\nid: 7\ndata: {"a":\ndata: 2}\n\ndata:{"b":3}\n\n'
    assert list(chat_sse.chunks([data])) == [{"a": 2}, {"b": 3}]


def test_a_last_event_without_its_blank_line_still_counts():
    assert list(chat_sse.chunks([b'data: {"a": 1}'])) == [{"a": 1}]


def test_an_error_event_raises_with_the_servers_body():
    data = wire([{"a": 1}, {"error": {"message": "overloaded", "type": "server_error"}}])
    reader = chat_sse.chunks([data])
    assert next(reader) == {"a": 1}
    with pytest.raises(chat_sse.StreamErrorEvent) as raised:
        next(reader)
    assert raised.value.body == {"message": "overloaded", "type": "server_error"}


@pytest.mark.parametrize("bad", [b"data: {not json\n\n", b"data: [1, 2]\n\n",
                                 b'data: "text"\n\n', b"data: \xff\xfe\n\n"])
def test_anything_but_a_json_object_is_a_value_error(bad):
    with pytest.raises(ValueError):
        list(chat_sse.chunks([bad]))
