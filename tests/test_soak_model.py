"""The soak's fake model (bench/soak_model.py) runs in a process of its own, with plain
threads, and what it says it sent is what a real client received: the soak judges Relay
by that transcript."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import httpx2
import openai
import pytest

from bench.relay_server import ROOT


@pytest.fixture
def soak_model() -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.soak_model", "--token-delay-ms", "1", "--seed", "14"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(10)


def test_its_transcript_is_what_a_client_received_for_every_kind_of_reply(soak_model):
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{soak_model}/v1", api_key="soak",
                           max_retries=0)
    received: dict[str, str] = {}
    for n in (0, 2, 14, 15):  # by the seeded plans: a cut, a normal, a failing, a long reply
        prompt = f"soak prompt s{n}n1: say something"
        text = ""
        try:
            for chunk in client.chat.completions.create(
                    model="fake-model", stream=True,
                    messages=[{"role": "user", "content": prompt}]):
                text += "".join(c.delta.content or "" for c in chunk.choices)
        except (openai.APIError, httpx2.HTTPError):
            pass  # a failing or cut reply: what arrived before it still counts
        received[prompt] = text

    with urllib.request.urlopen(f"http://127.0.0.1:{soak_model}/_soak/transcript") as answer:
        transcript = json.load(answer)
    assert set(transcript) == set(received)
    kinds = {attempts[0]["kind"] for attempts in transcript.values()}
    assert kinds == {"cut", "normal", "fail", "long"}, kinds
    for prompt, attempts in transcript.items():
        assert len(attempts) == 1 and attempts[0]["partial"] == ""
        assert attempts[0]["sent"] == received[prompt], (prompt, attempts[0]["kind"])
        assert attempts[0]["all_sent"] == (attempts[0]["kind"] in ("normal", "slow", "long"))
