"""What reasoning and tool steps cost: the time a tool step adds, and worker CPU per token.

One Relay worker (gunicorn + gevent) against the fake model in this process:

- tool step: the model asks for `calculator`; measured at the fake model, from the end of
  the turn that asks (its last byte sent) to the arrival of the request carrying the
  result: Relay reading the turn's end, running the tool, and asking again.
- CPU per token: the worker's utime + stime over replies of the same number of model
  chunks, text only against half reasoning, half text, read by one SSE client.

    python -m bench.parts_bench [--steps 50] [--replies 20] [--tokens 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench.fake_upstream import FakeUpstream, Reply
from bench.harness import cpu_seconds, last_user_prompt, write_json
from bench.relay_client import RelayClient, read_parts
from bench.relay_server import RelayServer


def reply_for(tokens: int):
    words = [f"w{i} " for i in range(tokens)]

    def reply(body: dict) -> Reply:
        prompt = last_user_prompt(body) or ""
        messages = body.get("messages") or []
        if prompt.startswith("step"):
            if messages[-1].get("role") == "tool":
                return Reply.words("The result is in.")
            return Reply.calling([("calculator", '{"expression": "2+3*4"}')])
        if prompt.startswith("mixed"):
            half = tokens // 2
            return Reply(tokens=[{"reasoning_content": w} for w in words[:half]] + words[half:],
                         token_delay_s=0.001)
        return Reply(tokens=words, token_delay_s=0.001)
    return reply


def step_latencies(fake: FakeUpstream, client: RelayClient, steps: int) -> list[float]:
    """Seconds from the end of each asking turn to the request with the tool's result."""
    thread = client.new_thread()
    gaps = []
    for n in range(steps):
        prompt = f"step {n}"
        sent = client.send(thread, prompt)
        parts = read_parts(client.stream(sent["stream_url"]))
        if parts.end_event != "done" or [s["result"] for s in parts.final_steps()] != ["14"]:
            raise RuntimeError(f"tool reply {n} ended {parts.end_event}: {parts.steps}")
        asks, told = [r for r in list(fake.requests)
                      if last_user_prompt(r.body or {}) == prompt][:2]
        gaps.append(told.arrived - asks.finished)
    return gaps


def cpu_per_token(client: RelayClient, pid: int, kind: str, replies: int,
                  tokens: int) -> float:
    """Worker CPU seconds per model chunk over `replies` replies of `kind`."""
    thread = client.new_thread()
    before = cpu_seconds(pid)
    for n in range(replies):
        sent = client.send(thread, f"{kind} {n}")
        if read_parts(client.stream(sent["stream_url"])).end_event != "done":
            raise RuntimeError(f"{kind} reply {n} did not complete")
    return (cpu_seconds(pid) - before) / (replies * tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, \
            FakeUpstream(default_reply=reply_for(args.tokens)) as fake:
        env = {"CHAT_PROVIDER": "openai", "OPENAI_API_KEY": "sk-bench",
               "OPENAI_BASE_URL": fake.url, "SECRET_KEY": "bench",
               "DATABASE_URL": f"sqlite:///{Path(tmp) / 'relay.sqlite3'}",
               "RATE_LIMIT": "1000000/minute", "TOOLS": "calculator"}
        with RelayServer(env, Path(tmp)) as server:
            client = RelayClient(server.base_url).open()
            pid = server.worker_pids()[0]
            cpu_per_token(client, pid, "text", 3, args.tokens)  # warm up
            gaps = sorted(step_latencies(fake, client, args.steps))
            # Alternating rounds, so drift in the host's load falls on both kinds alike.
            rounds = max(1, args.replies // 5)
            text = mixed = 0.0
            for _ in range(rounds):
                text += cpu_per_token(client, pid, "text", 5, args.tokens) / rounds
                mixed += cpu_per_token(client, pid, "mixed", 5, args.tokens) / rounds
    result = {
        "tool_step_ms": {"n": len(gaps), "p50": round(statistics.median(gaps) * 1000, 2),
                         "p90": round(gaps[int(0.9 * (len(gaps) - 1))] * 1000, 2),
                         "max": round(gaps[-1] * 1000, 2)},
        "cpu_us_per_token": {"text_only": round(text * 1e6, 1),
                             "reasoning_and_text": round(mixed * 1e6, 1),
                             "ratio": round(mixed / text, 2) if text else None},
        "tokens_per_reply": args.tokens, "replies": args.replies,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
