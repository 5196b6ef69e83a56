"""Relay's streaming baseline: added time to first token, CPU per token, commits per second.

Starts the fake model (`bench.fake_upstream`) as its own process and Relay under gunicorn with
one gevent worker, then runs batches of N concurrent "tabs" (threads in this process, one
browser identity each) that post a prompt and read the reply's SSE stream to its end:

    python -m bench.relay_bench [--streams 1,100] [--tokens 200] [--token-delay-ms 20]
                                [--throttle-ms MS] [--json out.json]

bench/README.md explains every figure and how it is measured.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.fake_upstream import numbered_tokens
from bench.harness import (
    BATCH_SLACK_S,
    REQUEST_TIMEOUT_S,
    BenchError,
    FakeUpstreamProcess,
    Rig,
    Tab,
    by_column,
    cpu_seconds,
    difference,
    environment,
    finish,
    fmt,
    health_problems,
    host_line,
    levels,
    listing,
    print_log,
    raise_fd_limit,
    relay_setting,
    run,
    run_args,
    scan_log,
    server_line,
    summary,
    table,
    write_json,
    writer_line,
    writer_settings,
)


# -- one tab -----------------------------------------------------------------------------------
@dataclass
class TimedTab(Tab):
    """A tab that also times its first and last delta; set up before timing starts."""

    t_first: float | None = None  # the first delta event arrived
    t_last: float | None = None  # the last delta event arrived
    delta_events: int = 0
    chars: int = 0
    text_ok: bool | None = None

    def on_delta(self, text: str, now: float) -> None:
        if self.t_first is None:
            self.t_first = now
        super().on_delta(text, now)
        self.delta_events += 1
        self.chars += len(text)
        self.t_last = now

    def run(self, barrier: threading.Barrier, deadline: float, expected_text: str) -> None:
        try:
            barrier.wait()
            sent = self.post()
            self.read(sent["stream_url"], deadline)
            if self.terminal is None:
                raise BenchError("the stream ended without a terminal event"
                                 + (" (truncated)" if self.conn and self.conn.truncated else ""))
            self.text_ok = self.text == expected_text
        except threading.BrokenBarrierError:
            self.error = "the start barrier broke"
        except Exception as err:  # reported per tab; one failure must not hide the others
            self.error = f"{type(err).__name__}: {err}"


# -- the benchmark -----------------------------------------------------------------------------
class Bench(Rig):
    """Batches of N tabs that stream one reply each, at the same time."""

    name = "relay-bench"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.tokens = numbered_tokens(args.tokens)  # what the fake sends
        self.expected_text = "".join(self.tokens)

    def start(self) -> None:
        args = self.args
        fake = FakeUpstreamProcess(self.workdir, tokens=args.tokens,
                                   token_delay_ms=args.token_delay_ms,
                                   first_token_delay_ms=args.first_token_delay_ms)
        self.start_servers(fake, STREAM_THROTTLE_MS=args.throttle_ms)

    def settings(self) -> dict[str, Any]:
        args = self.args
        return {
            "streams": args.streams, "tokens": args.tokens,
            "token_delay_ms": args.token_delay_ms,
            "first_token_delay_ms": args.first_token_delay_ms,
            **writer_settings(args.throttle_ms), "reply_chars": len(self.expected_text),
            **environment(args.worker_connections, "gevent", "gunicorn", "flask", "sqlalchemy",
                          "openai"),
        }

    # -- one batch ---------------------------------------------------------------------
    def run_batch(self, n: int, label: str) -> dict[str, Any]:
        assert self.server is not None and self.server.process is not None
        assert self.fake is not None and self.worker_pid is not None
        args = self.args
        tabs = [self.new_tab(TimedTab, i, label) for i in range(n)]
        self.live_tabs = tabs
        stream_s = (args.first_token_delay_ms + args.tokens * args.token_delay_ms) / 1000
        barrier = threading.Barrier(n, timeout=REQUEST_TIMEOUT_S)
        health_before = self.health()
        cpu_worker_before = cpu_seconds(self.worker_pid)
        cpu_master_before = cpu_seconds(self.server.process.pid)
        started = time.monotonic()
        deadline = started + stream_s + BATCH_SLACK_S
        threads = [threading.Thread(target=tab.run, args=(barrier, deadline, self.expected_text),
                                    name=f"tab-{tab.index}", daemon=True) for tab in tabs]
        for thread in threads:
            thread.start()

        def give_up(tab: TimedTab) -> None:
            barrier.abort()
            tab.close()

        finish(zip(tabs, threads, strict=True), deadline, give_up)
        cpu_worker_after = cpu_seconds(self.worker_pid)
        cpu_master_after = cpu_seconds(self.server.process.pid)
        health_after = self.health()
        records = self.upstream_records({tab.prompt for tab in tabs})
        result = self.summarise(n, tabs, records, health_before, health_after,
                                difference(cpu_worker_before, cpu_worker_after),
                                difference(cpu_master_before, cpu_master_after))
        pids = self.server.worker_pids()
        if pids != [self.worker_pid]:
            result["warnings"].append(f"worker changed from {self.worker_pid} to {pids}: "
                                      "the CPU figures of this batch are incomplete")
            if len(pids) == 1:
                self.worker_pid = pids[0]
        self.live_tabs = []
        return result

    def summarise(self, n: int, tabs: list[TimedTab], records: dict[str, list[dict[str, Any]]],
                  health_before: dict[str, Any], health_after: dict[str, Any],
                  cpu_worker: float | None, cpu_master: float | None) -> dict[str, Any]:
        problems: list[str] = []  # a stream did not work: the exit status says so
        warnings: list[str] = []  # the figures need a second look
        added, total, upstream, to_upstream, back, post, sse_open = [], [], [], [], [], [], []
        last_back, done_lag = [], []
        tokens_relayed = 0
        per_tab = []
        for tab in tabs:
            recs = records.get(tab.prompt, [])
            rec = recs[0] if len(recs) == 1 else None
            if len(recs) != 1:
                problems.append(f"tab {tab.index}: {len(recs)} upstream requests for its prompt")
            tokens_relayed += sum(r.get("tokens_sent") or 0 for r in recs)
            if tab.error:
                problems.append(f"tab {tab.index}: {tab.error}")
            elif tab.terminal != "done":
                problems.append(f"tab {tab.index}: ended with `{tab.terminal}`, not `done`")
            elif not tab.text_ok:
                problems.append(f"tab {tab.index}: streamed text differs from the model's")
            if rec is not None and (rec.get("outcome") != "complete"
                                    or rec.get("tokens_sent") != len(self.tokens)):
                problems.append(f"tab {tab.index}: upstream outcome {rec.get('outcome')}, "
                                f"{rec.get('tokens_sent')} tokens sent")
            row: dict[str, Any] = {"tab": tab.index, "message_id": tab.message_id,
                                   "terminal": tab.terminal, "error": tab.error,
                                   "delta_events": tab.delta_events, "chars": tab.chars,
                                   "text_ok": tab.text_ok}
            times = (tab.t0, tab.t_first)
            if rec is not None and None not in times and rec.get("first_token_sent") is not None:
                up = rec["first_token_sent"] - rec["arrived"]
                tot = tab.t_first - tab.t0
                added.append(tot - up)
                total.append(tot)
                upstream.append(up)
                to_upstream.append(rec["arrived"] - tab.t0)
                back.append(tab.t_first - rec["first_token_sent"])
                row.update(total_ttft_s=tot, upstream_ttft_s=up, added_ttft_s=tot - up,
                           to_upstream_s=rec["arrived"] - tab.t0,
                           first_token_back_s=tab.t_first - rec["first_token_sent"])
            finished = rec.get("finished") if rec is not None else None
            if finished is not None and tab.t_last is not None:
                # The fake writes the last token, then the finish/usage/[DONE] tail, then
                # stamps `finished`: the last token left at most that tail's write earlier.
                last_back.append(tab.t_last - finished)
                row["last_token_back_s"] = tab.t_last - finished
            if finished is not None and tab.t_end is not None:
                done_lag.append(tab.t_end - finished)
                row["done_after_upstream_s"] = tab.t_end - finished
            if tab.t0 is not None and tab.t_posted is not None:
                post.append(tab.t_posted - tab.t0)
                row["post_s"] = tab.t_posted - tab.t0
            if tab.t_posted is not None and tab.t_open is not None:
                sse_open.append(tab.t_open - tab.t_posted)
                row["sse_open_s"] = tab.t_open - tab.t_posted
            if tab.t0 is not None and tab.t_end is not None:
                row["stream_s"] = tab.t_end - tab.t0
            per_tab.append(row)

        starts = [t.t0 for t in tabs if t.t0 is not None]
        ends = [t.t_end for t in tabs if t.t_end is not None]
        wall = max(ends) - min(starts) if starts and ends else None
        stream_seconds = sum(r["stream_s"] for r in per_tab if "stream_s" in r)
        wb, wa = health_before["writer"], health_after["writer"]
        writer = {k: wa[k] - wb[k] for k in ("commits", "deltas", "ticks", "finalized",
                                              "failures")}
        problems += health_problems(health_after, health_before)
        throttle_s = self.settings()["throttle_ms"] / 1000
        if wall and throttle_s > 0 and wall > 5 * throttle_s \
                and writer["ticks"] < 0.5 * wall / throttle_s:
            # Every active stream should be flushed (or heartbeated) once per throttle period.
            warnings.append(f"the delta writer ticked {writer['ticks']} times in {wall:.2f} s "
                            f"(~{wall / throttle_s:.0f} expected at {throttle_s * 1000:g} ms): "
                            "it did not run while the replies streamed")
        ok = sum(1 for t in tabs if t.terminal == "done" and not t.error and t.text_ok)
        return {
            "streams": n, "done": ok, "wall_s": wall, "stream_seconds": stream_seconds,
            "added_ttft_s": summary(added), "total_ttft_s": summary(total),
            "upstream_ttft_s": summary(upstream), "to_upstream_s": summary(to_upstream),
            "first_token_back_s": summary(back), "post_s": summary(post),
            "sse_open_s": summary(sse_open), "last_token_back_s": summary(last_back),
            "done_after_upstream_s": summary(done_lag),
            "delta_events": summary([t.delta_events for t in tabs]),
            "chars": summary([t.chars for t in tabs]),
            "tokens_relayed": tokens_relayed,
            "worker_cpu_s": cpu_worker, "master_cpu_s": cpu_master,
            "worker_cpu_us_per_token": (cpu_worker * 1e6 / tokens_relayed
                                        if tokens_relayed and cpu_worker is not None
                                        else None),
            "writer": writer,
            "commits_per_s": writer["commits"] / wall if wall else None,
            "deltas_per_s": writer["deltas"] / wall if wall else None,
            "commits_per_stream_s": (writer["commits"] / stream_seconds
                                     if stream_seconds else None),
            "deltas_per_stream_s": (writer["deltas"] / stream_seconds
                                    if stream_seconds else None),
            "problems": problems, "warnings": warnings, "tabs": per_tab,
        }


# -- output ------------------------------------------------------------------------------------
def render(settings: dict[str, Any], results: list[dict[str, Any]]) -> str:
    s = settings
    lines = [
        "Relay streaming benchmark",
        f"  reply: {s['tokens']} tokens ({s['reply_chars']} chars) every "
        f"{s['token_delay_ms']:g} ms, first token after {s['first_token_delay_ms']:g} ms",
        writer_line(s),
        server_line(s),
        host_line(s),
        "",
    ]
    ms = 1000.0
    rows: list[tuple[str, Any]] = [
        ("streams ended `done`, text exact", lambda r: f"{r['done']}/{r['streams']}"),
        ("batch wall time, first POST to last end (s)", lambda r: fmt(r["wall_s"], 1, 2)),
        ("ADDED TTFT median (ms)", lambda r: fmt(r["added_ttft_s"]["median"], ms)),
        ("ADDED TTFT p99 (ms)", lambda r: fmt(r["added_ttft_s"]["p99"], ms)),
        ("ADDED TTFT max (ms)", lambda r: fmt(r["added_ttft_s"]["max"], ms)),
        ("  total TTFT seen by the tab, median (ms)",
         lambda r: fmt(r["total_ttft_s"]["median"], ms)),
        ("  upstream's own TTFT, median (ms)",
         lambda r: fmt(r["upstream_ttft_s"]["median"], ms, 2)),
        ("  t0 -> upstream request arrived, median (ms)",
         lambda r: fmt(r["to_upstream_s"]["median"], ms)),
        ("  first token: upstream -> tab, median (ms)",
         lambda r: fmt(r["first_token_back_s"]["median"], ms)),
        ("  POST answered, median (ms)", lambda r: fmt(r["post_s"]["median"], ms)),
        ("  SSE headers after POST, median (ms)",
         lambda r: fmt(r["sse_open_s"]["median"], ms)),
        ("last token: upstream -> tab, median (ms)",
         lambda r: fmt(r["last_token_back_s"]["median"], ms)),
        ("last token: upstream -> tab, p99 (ms)",
         lambda r: fmt(r["last_token_back_s"]["p99"], ms)),
        ("`done` after upstream finished, median (ms)",
         lambda r: fmt(r["done_after_upstream_s"]["median"], ms)),
        ("`done` after upstream finished, p99 (ms)",
         lambda r: fmt(r["done_after_upstream_s"]["p99"], ms)),
        ("delta events per stream, median", lambda r: fmt(r["delta_events"]["median"], 1, 0)),
        ("characters per stream, median", lambda r: fmt(r["chars"]["median"], 1, 0)),
        ("tokens relayed (upstream tokens_sent)", lambda r: f"{r['tokens_relayed']:,}"),
        ("WORKER CPU per relayed token (us)",
         lambda r: fmt(r["worker_cpu_us_per_token"], 1, 1)),
        ("  worker CPU, utime+stime (s)", lambda r: fmt(r["worker_cpu_s"], 1, 2)),
        ("  master CPU, for information (s)", lambda r: fmt(r["master_cpu_s"], 1, 2)),
        ("DB COMMITS per second", lambda r: fmt(r["commits_per_s"], 1, 1)),
        ("  delta rows per second", lambda r: fmt(r["deltas_per_s"], 1, 1)),
        ("  commits per stream-second", lambda r: fmt(r["commits_per_stream_s"], 1, 3)),
        ("  delta rows per stream-second", lambda r: fmt(r["deltas_per_stream_s"], 1, 2)),
        ("  commits / delta rows / writer ticks",
         lambda r: f"{r['writer']['commits']}/{r['writer']['deltas']}/{r['writer']['ticks']}"),
    ]
    lines += table(["", *[f"N={r['streams']}" for r in results]], by_column(rows, results),
                   indent="", min_width=12)
    for r in results:
        for kind in ("problems", "warnings"):
            lines += listing(f"{kind} at N={r['streams']}", r[kind])
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_bench",
        description="Relay's streaming baseline against a fake model (see bench/README.md).")
    parser.add_argument("--streams", type=levels(2000, "concurrency level"), default=[1, 100],
                        help="concurrency levels, comma-separated (default 1,100)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--token-delay-ms", type=float, default=20.0,
                        help="the model's pace between tokens (20)")
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0,
                        help="the model's own time to first token (0)")
    relay_setting(parser, "--throttle-ms", "STREAM_THROTTLE_MS", int)
    run_args(parser)
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.tokens > 100_000:
        parser.error("--tokens must be within 1..100000")
    if args.token_delay_ms < 0 or args.first_token_delay_ms < 0:
        parser.error("delays cannot be negative")
    if args.worker_connections < max(args.streams) + 10:
        parser.error("--worker-connections is too small for the largest level "
                     "(each tab holds one connection to the worker while it streams)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Each tab holds ~2 sockets here and ~3 in the worker (tab in, upstream out, database).
    raise_fd_limit(max(4096, max(args.streams) * 8 + 256))
    bench = Bench(args)
    settings = bench.settings()
    results: list[dict[str, Any]] = []

    def measure() -> None:
        print("warm-up: 1 stream (not measured) ...", flush=True)
        warm = bench.run_batch(1, "warmup")
        if warm["problems"] or warm["warnings"]:
            notes = warm["problems"] + warm["warnings"]
            print("warm-up problems:\n  " + "\n  ".join(notes), flush=True)
        for n in args.streams:
            print(f"measuring N={n} ...", flush=True)
            results.append(bench.run_batch(n, f"n{n}"))

    status = run(bench, measure)
    if results:
        print()
        print(render(settings, results))
    findings, counts, noteworthy = scan_log(bench.server_log, ("Booting worker", "Worker exiting"))
    print_log(f"{counts['Booting worker']} worker boot(s), {len(noteworthy)} noteworthy line(s)",
              noteworthy)
    if args.json and results:
        write_json(args.json, {"settings": settings, "results": results,
                               "gunicorn_log_findings": findings})
    if status == 0 and any(r["problems"] for r in results):
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
