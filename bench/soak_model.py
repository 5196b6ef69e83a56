"""The soak's fake model, in a process of its own: a plan per prompt, a transcript per request.

    python -m bench.soak_model --token-delay-ms 40 --seed 14

A first request of a reply is slow, long, failing or cut mid-stream according to its prompt
(seeded); a continue is an ordinary reply. It prints its port, then serves until SIGTERM;
`GET /_soak/transcript` and `GET /_soak/streams` are what the soak reads.

It runs apart from the soak's clients on purpose: in their process every socket is a
gevent socket, and there the fake once put a token on the wire twice while its loop wrote
it once (a recording proxy between it and Relay showed both copies). A model that is wrong
about what it sent makes the soak blame Relay for it.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.fake_upstream import FakeUpstream, Reply, _Handler, serve_until_stopped

PROMPT = re.compile(r"^soak \w+ (s\d+n\d+):")


@dataclass
class Attempt:
    """One request to the model for one reply: what Relay had so far, what the model sent."""

    kind: str
    partial: str  # the reply's text Relay sent back to be continued ("" for a first request)
    tokens: list[str]
    body: dict[str, Any]


def reply_of(body: dict[str, Any]) -> tuple[str | None, str]:
    """(the reply's prompt, the partial reply being continued) of a Chat Completions body."""
    messages = body.get("messages") or []
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.get("role") == "user" and isinstance(m.get("content"), str) and \
                PROMPT.match(m["content"]):
            after = messages[i + 1] if i + 1 < len(messages) else None
            partial = after.get("content") if after and after.get("role") == "assistant" else ""
            return m["content"], partial or ""
    return None, ""


class SoakModel(FakeUpstream):
    """The fake model: a first request of a reply is slow, long, failing or cut mid-stream
    according to its prompt (seeded); a continue is an ordinary reply."""

    def __init__(self, token_delay_s: float, seed: int, port: int = 0) -> None:
        super().__init__("127.0.0.1", port)
        self.token_delay_s = token_delay_s
        self.seed = seed
        self.attempts: dict[str, list[Attempt]] = {}
        self._lock = threading.Lock()

    def next_reply(self, body: dict[str, Any]) -> Reply:
        prompt, partial = reply_of(body)
        if prompt is None:
            return super().next_reply(body)
        with self._lock:
            attempts = self.attempts.setdefault(prompt, [])
            n = len(attempts)
        tag = PROMPT.match(prompt).group(1) + f"a{n}t"
        rng = random.Random(f"{self.seed}|{prompt}|{n}")
        kind = "normal" if n else rng.choices(
            ["normal", "slow", "long", "fail", "cut"], [55, 10, 10, 12.5, 12.5])[0]
        count = {"slow": 20, "long": 400}.get(kind, rng.randint(20, 80))
        tokens = [f"{tag}{i} " for i in range(1, count + 1)]
        reply = Reply(tokens=tokens, token_delay_s=self.token_delay_s)
        if kind == "slow":
            reply.first_token_delay_s, reply.token_delay_s = 3.0, 0.3
        elif kind == "long":
            reply.token_delay_s = self.token_delay_s / 3
        elif kind == "fail":
            reply.error_after = rng.randint(3, count - 3)
        elif kind == "cut":
            reply.drop_after = rng.randint(3, count - 3)
        with self._lock:
            attempts.append(Attempt(kind, partial, tokens, body))
        return reply

    def transcript(self) -> dict[str, list[dict[str, Any]]]:
        """Per prompt, each request in order: its kind, the partial it continued, the text
        the model sent (tokens written before it ended, failed or was cut) and how it ended."""
        with self._changed:
            records = {id(r.body): r for r in self.requests}
        with self._lock:
            items = {p: list(a) for p, a in self.attempts.items()}
        out: dict[str, list[dict[str, Any]]] = {}
        for prompt, attempts in items.items():
            for a in attempts:
                record = records.get(id(a.body))
                sent = record.tokens_sent if record else 0
                out.setdefault(prompt, []).append({
                    "kind": a.kind, "partial": a.partial, "sent": "".join(a.tokens[:sent]),
                    "all_sent": record is not None and record.outcome == "complete",
                    "outcome": record.outcome if record else None})
        return out


class _SoakHandler(_Handler):
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_soak/transcript":
            self._send_json(200, self.fake.transcript())
        elif path == "/_soak/streams":
            self._send_json(200, {"active": self.fake.active_streams,
                                  "max": self.fake.max_active_streams})
        else:
            super().do_GET()


SoakModel.handler_class = _SoakHandler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token-delay-ms", type=float, default=40.0)
    p.add_argument("--seed", type=int, default=14)
    args = p.parse_args(argv)
    model = SoakModel(args.token_delay_ms / 1000, args.seed, port=args.port)
    print(model.port, flush=True)  # the soak reads this line
    serve_until_stopped(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
