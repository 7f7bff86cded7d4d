"""Where the ingest server's CPU per event goes: py-spy samples of the real server under full load.

What it does, on the local PostgreSQL (TEST_POSTGRES_URL or postgres@127.0.0.1:5432):

1. a table state as bench/ingest.py makes it (``--table-rows 0``: a fresh migrated database; N: a clone
   of bench/fill.py's database), the organisation and a token;
2. ``ingest_server.py`` (dispatch ``--dispatch off`` or ``on``, as bench/ingest.py starts it) and
   bench/ingest.py's load process at full rate;
3. after the warm-up, ``py-spy record`` samples the server for ``--seconds`` (``--nonblocking``: the
   server is never paused; idle samples dropped, so the samples are its CPU on the event loop's thread)
   while its user + system CPU is read from /proc and the load process counts the events acknowledged;
4. prints the server's CPU per event and, per function, the share of samples where it is on the stack
   (inclusive) and at the top (self), both converted to µs per event.

py-spy is not a dependency of the project: install it anywhere (``pip install --target DIR py-spy``) and
give its path with ``--py-spy`` (default: ``py-spy`` on PATH).

Usage: ``python bench/profile_ingest.py [--seconds 20] [--table-rows 0] [--dispatch off] [--top 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.ingest import (  # noqa: E402
    load_average,
    load_command,
    prepare_org,
    process_cpu_seconds,
    running_server,
    table_state,
)

#: A py-spy raw line: the frames from the root, ";"-separated, then the sample count.
RAW_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
#: A frame as py-spy writes it: ``function (path:line)``; the line is dropped so a function is one entry.
FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>[^:()]*)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``function (file)`` with the path shortened to the package and file (no line number)."""
    found = FRAME.match(frame)
    if found is None:
        return frame
    path = found["path"]
    for marker in ("site-packages/", "lib/python3.11/", str(REPO_ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found['function']} ({path})"


def read_samples(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        found = RAW_LINE.match(line)
        if found is None:
            continue
        frames = [frame_name(frame) for frame in found["stack"].split(";")]
        stacks.append((frames, int(found["count"])))
    return stacks


def summarise(stacks: list[tuple[list[str], int]], us_per_event: float, top: int) -> None:
    total = sum(count for _, count in stacks)
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    print(
        f"{total:,} samples on the server's threads (idle dropped); µs per event = share × {us_per_event:.1f}"
    )
    for title, counter in (("inclusive (on the stack)", inclusive), ("self (top of the stack)", own)):
        print(f"top {top} {title}:")
        for name, count in counter.most_common(top):
            share = count / total
            print(f"  {share:6.1%}  {share * us_per_event:6.1f} µs  {name}")


async def profile(args: argparse.Namespace) -> None:
    py_spy = shutil.which(args.py_spy) or args.py_spy
    print(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    async with table_state(args.table_rows) as url:
        token = await prepare_org(url)
        if args.dispatch == "on":
            from bench.ingest import DiscardSink, add_destination  # noqa: PLC0415

            sink = DiscardSink()
            await sink.start()
            await add_destination(url, sink.port)
        async with running_server(url, dispatch=args.dispatch == "on") as server:
            pid = server.process.pid
            command = load_command(server.port, token, args, rate=None, seed=31, seconds=args.seconds)
            load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            await asyncio.sleep(args.warmup)
            cpu_before = process_cpu_seconds(pid)
            with tempfile.TemporaryDirectory(prefix="aifw-profile-") as directory:
                raw = Path(args.output) if args.output else Path(directory) / "server.txt"
                spy = await asyncio.create_subprocess_exec(
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    str(args.rate),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                _, spy_err = await spy.communicate()
                cpu = process_cpu_seconds(pid) - cpu_before
                out, err = await asyncio.to_thread(load.communicate)
                if load.returncode != 0:
                    raise SystemExit(f"the load process failed:\n{err.decode()}")
                if spy.returncode != 0 or not raw.exists():
                    raise SystemExit(f"py-spy failed:\n{spy_err.decode()}")
                figures = orjson.loads(out.decode().strip().splitlines()[-1])
                events = figures["events_per_second"] * args.seconds
                us_per_event = cpu / max(events, 1) * 1e6
                print(
                    f"table state {args.table_rows:,} rows, dispatch {args.dispatch}, {args.connections} "
                    f"connections at full rate: {figures['events_per_second']:,.0f} events/s; server CPU "
                    f"{cpu:.1f} s over {args.seconds:g} s = {us_per_event:.1f} µs per event "
                    f"(load average {load_average()})"
                )
                summarise(read_samples(raw), us_per_event, args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="sampled window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before sampling")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--table-rows", type=int, default=0)
    parser.add_argument("--dispatch", choices=("off", "on"), default="off")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--output", default=None, help="keep py-spy's raw (collapsed) stacks in this file")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy executable")
    asyncio.run(profile(parser.parse_args()))


if __name__ == "__main__":
    main()
