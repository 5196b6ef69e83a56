"""What an attached image costs: uploading a large one, and sending it to the model.

One Relay worker (gunicorn + gevent, SQLite) against the fake OpenAI-compatible model in
this process. For an image of about `--mb` MB (random pixels, so it barely compresses):

- upload: POST /uploads until its 201 (transfer, type sniffing, Pillow re-encoding, the
  blob stored);
- send: POST /threads/<id>/messages with the upload until its 201;
- to the model: from that POST until the model's request has arrived whole (the image
  read from the database, base64-encoded into an `image_url` part, sent);
- the size of that request to the model, against the image's own size;
- the reply read to its end by an SSE client;
- the worker's responsiveness meanwhile: the slowest answer to GET /healthz, asked every
  50 ms by another client while the upload is processed.

    python -m bench.upload_bench [--mb 10] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.fake_upstream import FakeUpstream, Reply
from bench.harness import last_user_prompt, write_json
from bench.relay_client import RelayClient, read_reply
from bench.relay_server import RelayServer


def noisy_png(megabytes: float) -> bytes:
    """A PNG of random pixels of about `megabytes` MB (it does not compress)."""
    from PIL import Image

    side = int(math.sqrt(megabytes * 1024 * 1024 / 3))
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def slowest_answer(base_url: str, stop: threading.Event, seen: list[float]) -> None:
    other = RelayClient(base_url)
    while not stop.wait(0.05):
        began = time.monotonic()
        other.request("GET", "/healthz")
        seen.append(time.monotonic() - began)


def one_round(fake: FakeUpstream, client: RelayClient, image: bytes, n: int) -> dict:
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=slowest_answer, args=(client.base_url, stop, seen))
    watcher.start()
    started = time.monotonic()
    answer = client.upload(f"photo-{n}.png", image)
    uploaded = time.monotonic()
    stop.set()
    watcher.join()
    if answer.status != 201:
        raise RuntimeError(f"upload answered {answer.status}: {answer.text}")
    upload = answer.json()
    thread = client.new_thread()
    prompt = f"describe {n}"
    posted = time.monotonic()
    sent = client.post_json(f"/threads/{thread}/messages",
                            {"content": prompt, "attachments": [upload["id"]]})
    accepted = time.monotonic()
    if sent.status != 201:
        raise RuntimeError(f"send answered {sent.status}: {sent.text}")
    text, end, _ = read_reply(client.stream(sent.json()["stream_url"]))
    done = time.monotonic()
    if end != "done":
        raise RuntimeError(f"reply {n} ended {end}")
    [record] = [r for r in list(fake.requests) if last_user_prompt(r.body) == prompt]
    request_bytes = int(record.headers.get("Content-Length") or 0) or \
        len(json.dumps(record.body).encode())
    return {"upload_s": uploaded - started, "send_s": accepted - posted,
            "healthz_max_s": max(seen, default=0.0),
            # `arrived` is stamped once the request's body has been read whole.
            "to_model_s": record.arrived - posted, "reply_done_s": done - posted,
            "stored_bytes": upload["size"], "request_bytes": request_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    image = noisy_png(args.mb)
    with tempfile.TemporaryDirectory() as tmp, \
            FakeUpstream(default_reply=lambda body: Reply.words("A picture of noise.")) as fake:
        env = {"CHAT_PROVIDER": "openai", "OPENAI_API_KEY": "sk-bench",
               "OPENAI_BASE_URL": fake.url, "CHAT_MODELS": "openai:bench-model;vision",
               "SECRET_KEY": "bench", "RATE_LIMIT": "1000000/minute",
               "DATABASE_URL": f"sqlite:///{Path(tmp) / 'relay.sqlite3'}"}
        with RelayServer(env, Path(tmp)) as server:
            client = RelayClient(server.base_url, timeout=120).open()
            rounds = [one_round(fake, client, image, n) for n in range(args.rounds)]

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 3)

    result = {
        "image_bytes": len(image), "rounds": args.rounds,
        "upload_s": median("upload_s"), "send_s": median("send_s"),
        "to_model_s": median("to_model_s"), "reply_done_s": median("reply_done_s"),
        "healthz_max_during_upload_s": median("healthz_max_s"),
        "stored_bytes": rounds[0]["stored_bytes"],
        "request_to_model_bytes": rounds[0]["request_bytes"],
        "request_over_image": round(rounds[0]["request_bytes"] / len(image), 3),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
