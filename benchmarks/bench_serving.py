"""Latency and throughput of the service, beside its peers, in one run.

Needs a built data folder (``precision demo --no-serve``; ``PRECISION_DATA_DIR``).
Every server runs in its own process on 127.0.0.1 and the load comes from another
process (a small keep-alive HTTP/1.1 client on asyncio), bounded in count and time.
Each server is first asked once for every card, as a warmed-up service would have
been; the feature cache's hits and misses are printed with the figures.

Rows:

1. /recommend, 1 card, 1 connection: ours (BentoML, tuned) vs BentoML with stock
   settings (60 s request timeout, no garbage-collector tuning, no feature cache).
2. /recommend, 10 cards, 16 connections: ours vs a bare FastAPI app in one uvicorn
   worker calling the same package function, both up and taking turns.
3. /recommend, 100 cards, 1 connection, end to end vs stock Feast
   ``get_online_features`` for the same 100 cards alone; also ours with the
   feature cache off (every card read from the online store and scored on every
   request) and the stock-settings server.
4. Worker memory over a load of 16 connections (60 s; 2 s with ``--quick``).
5. Segment preview over 1,000,000 made-up scored card holders (in process): the
   cell index vs the same query in pandas, over a mix of six kinds of preview;
   also the index's build time and memory.

``--quick`` (CI) runs every part briefly on 20,000 segment cards and leaves out
the cache-off and stock-settings servers. ``--segments-only`` runs row 5
alone, without a data folder.

Usage: ``python -m benchmarks.bench_serving [--quick] [--segments-only]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from starlette.requests import Request  # resolved by FastAPI in the peer's route

if TYPE_CHECKING:
    import pandas

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOCK_ENV = {
    "PRECISION_SERVING_REQUEST_TIMEOUT": "60",
    "PRECISION_SERVING_FREEZE_GC": "false",
    "PRECISION_SERVING_FEATURE_CACHE_SECONDS": "0",
}


@dataclass
class Run:
    """Latencies (ms) of one load run and its request rate."""

    latencies: list[float]
    seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else 0.0


# Load generator ------------------------------------------------------------------


async def _one_connection(
    port: int,
    count: int,
    body: Callable[[], bytes],
    deadline: float,
    out: list[float],
    errors: list,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            if time.perf_counter() > deadline:
                break
            request = body()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            out.append(1000 * (time.perf_counter() - started))
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head[:20])
    finally:
        writer.close()


def _request(port: int, path: str, key: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def _load(args: tuple) -> tuple[list[float], float, int]:
    port, key, cards, per_request, connections, count, seconds, seed = args
    rng = random.Random(seed)

    def body() -> bytes:
        chosen = rng.sample(cards, per_request)
        return _request(port, "/recommend", key, {"cards": chosen, "k": 5})

    async def main() -> tuple[list[float], float, int]:
        out: list[float] = []
        errors: list = []
        per_connection = max(1, count // connections)
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(
            *(
                _one_connection(port, per_connection, body, deadline, out, errors)
                for _ in range(connections)
            )
        )
        return out, time.perf_counter() - started, len(errors)

    return asyncio.run(main())


def load(
    port: int,
    key: str,
    cards: list[str],
    per_request: int,
    connections: int,
    count: int,
    seconds: float,
) -> Run:
    """Run a load in a separate process and return its latencies."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        args = (port, key, cards, per_request, connections, count, seconds, 7)
        latencies, elapsed, errors = pool.apply(_load, (args,))
    return Run(latencies, elapsed, errors)


# Servers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A server process on 127.0.0.1, started and stopped by this script."""

    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=self.log, stderr=self.log
        )

    def wait_ready(self, path: str = "/readyz", timeout: float = 240.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                url = f"http://127.0.0.1:{self.port}{path}"
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.log.seek(0)
        raise RuntimeError(self.log.read()[-3000:].decode(errors="replace"))

    def worker_rss_mb(self) -> float:
        """Resident memory of the process that answers requests (largest child)."""
        import psutil

        parent = psutil.Process(self.process.pid)
        processes = [parent, *parent.children(recursive=True)]
        return max(p.memory_info().rss for p in processes) / 2**20

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def bentoml_server(env_extra: dict[str, str]) -> Server:
    from serving.cli import serve_command, service_environment

    port = free_port()
    env = service_environment() | env_extra
    return Server(serve_command("127.0.0.1", port), env, port)


def fastapi_peer() -> Server:
    from serving.cli import service_environment

    port = free_port()
    command = [sys.executable, "-m", "benchmarks.bench_serving", "--peer", str(port)]
    return Server(command, service_environment(), port)


def run_fastapi_peer(port: int) -> None:
    """A bare FastAPI app, one uvicorn worker, calling the same package function."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import Response

    from features.settings import Settings
    from serving.app import Runtime
    from serving.schemas import RecommendRequest
    from serving.settings import ServingSettings

    runtime = Runtime.load(Settings(), ServingSettings())
    scorer = runtime.scorer()
    app = FastAPI()

    @app.post("/recommend")
    async def recommend(request: Request) -> Response:
        body = RecommendRequest.model_validate_json(await request.body())
        return Response(
            scorer.recommend(body).model_dump_json(), media_type="application/json"
        )

    @app.get("/readyz")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", workers=1)


# Rows ----------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    """Median and range of repeated figures."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def repeated(runs: list[Run]) -> dict[str, list[float]]:
    return {
        "p50": [r.pct(50) for r in runs],
        "p99": [r.pct(99) for r in runs],
        "rate": [r.rate for r in runs],
        "errors": [float(r.errors) for r in runs],
    }


def measure(
    port: int,
    key: str,
    cards: list[str],
    per: int,
    conns: int,
    n: int,
    s: float,
    reps: int,
) -> dict[str, list[float]]:
    load(port, key, cards, per, conns, max(50, n // 5), s / 3)  # warm-up
    return repeated([load(port, key, cards, per, conns, n, s) for _ in range(reps)])


def prime(port: int, key: str, cards: list[str]) -> None:
    """Ask once for every card (100 per request), as a warmed-up service has."""
    import httpx

    for start in range(0, len(cards), 100):
        request = {"cards": cards[start : start + 100], "k": 5}
        httpx.post(
            f"http://127.0.0.1:{port}/recommend",
            json=request,
            headers={"X-API-Key": key},
            timeout=60,
        ).raise_for_status()


def side_by_side(
    ours: Server, key: str, cards: list[str], n: int, seconds: float, reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """10 cards per request at 16 connections, ours and the bare FastAPI peer
    taking turns (both up, one loaded at a time), so both see the same machine.
    """
    peer = fastapi_peer()
    peer.wait_ready()
    try:
        prime(peer.port, key, cards)
        runs: dict[int, list[Run]] = {ours.port: [], peer.port: []}
        for port in runs:
            load(port, key, cards, 10, 16, max(50, n // 5), seconds / 3)  # warm-up
        for _ in range(reps):
            for port in runs:
                runs[port].append(load(port, key, cards, 10, 16, n, seconds))
    finally:
        peer.stop()
    return repeated(runs[ours.port]), repeated(runs[peer.port])


def print_row(name: str, figures: dict[str, list[float]]) -> None:
    print(
        f"  {name:<34} p50 {spread(figures['p50']):>22} ms   "
        f"p99 {spread(figures['p99']):>22} ms   "
        f"{spread(figures['rate']):>22} req/s   errors {int(sum(figures['errors']))}"
    )


def feast_peer(cards_keys: list[str], reps: int) -> list[float]:
    """Latency of stock Feast ``get_online_features`` for 100 cards (ms)."""
    from features.settings import Settings
    from features.store import open_store

    settings = Settings()
    store = open_store(settings)
    service = store.get_feature_service("needs_v1")
    rng = random.Random(3)
    times = []
    for _ in range(reps):
        chosen = rng.sample(cards_keys, 100)
        started = time.perf_counter()
        store.get_online_features(features=service, entity_rows={"card_key": chosen})
        times.append(1000 * (time.perf_counter() - started))
    return times


def segment_population(cards: int) -> tuple[pandas.DataFrame, pandas.DataFrame]:
    """Made-up batch scores: profile columns, 12 needs and 5 top offers a card."""
    import pandas as pd

    rng = np.random.default_rng(5)
    posts = np.array([f"P{i:02d}" for i in range(1, 38)])
    frame = pd.DataFrame(
        {
            "card_key": np.char.add("k", np.arange(cards).astype(str)),
            "post_id": posts[rng.integers(0, 37, cards)],
            "country": np.array(["US", "ID", "JP", "BR", "DE"])[
                rng.integers(0, 5, cards)
            ],
            "language": np.array(["en", "id", "ja", "pt", "de", "zh"])[
                rng.integers(0, 6, cards)
            ],
            "age_band": np.array(["18-29", "30-44", "45-59", "60+"])[
                rng.integers(0, 4, cards)
            ],
            "generation": rng.integers(1, 4, cards),
            "card_status": np.array(["active", "expired"])[rng.integers(0, 2, cards)],
            "consent_marketing": rng.random(cards) < 0.7,
        }
    )
    for i in range(12):
        frame[f"p_need{i}"] = rng.beta(1, 8, cards).astype(np.float32)
    top = pd.DataFrame(
        {
            "card_key": np.repeat(frame["card_key"].to_numpy(), 5),
            "offer_id": np.char.add("O", rng.integers(0, 300, 5 * cards).astype(str)),
            "rank": np.tile(np.arange(1, 6), cards),
            "score": rng.random(5 * cards),
        }
    )
    return frame, top


# The mix of previews measured, in equal shares. The last two are the slowest
# kinds for the index: a need's threshold over a broad segment, and filters that
# keep about a third of the membership (many cells to sum).
SEGMENT_QUERIES = (
    {"filters": {}},
    {"filters": {"post_id": ["P01", "P02", "P03"], "consent_marketing": True}},
    {
        "filters": {
            "age_band": ["60+"],
            "need": {"need_id": "need3", "min_propensity": 0.2},
        }
    },
    {"filters": {"language": ["en", "zh"], "generation": [2]}},
    {
        "filters": {
            "consent_marketing": False,
            "need": {"need_id": "need1", "min_propensity": 0.05},
        }
    },
    {"filters": {"country": ["US", "ID", "JP"], "card_status": ["active"]}},
)


def segment_rows(cards: int, queries: int, pandas_queries: int, repeats: int) -> None:
    """Segment preview over ``cards`` made-up scored card holders: our index vs
    the same query in pandas, both over the same mix of previews in each repeat.
    """
    import tracemalloc

    from serving.schemas import SegmentRequest
    from serving.segments import SegmentIndex, preview, stats_with_pandas

    frame, top = segment_population(cards)
    started = time.perf_counter()
    index = SegmentIndex.from_frames(frame, top)
    built = time.perf_counter() - started
    tracemalloc.start()  # a second build, for its peak memory only
    SegmentIndex.from_frames(frame, top)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"  index of {cards:,} cards built in {built:.1f} s: "
        f"{len(index.cells):,} cells, {index.nbytes / 2**20:.0f} MiB held, "
        f"peak {peak / 2**20:.0f} MiB while building"
    )

    mix = [SegmentRequest.model_validate(q) for q in SEGMENT_QUERIES]
    for body in mix:  # warm-up
        preview(index, body, 10)
    ours: dict[str, list[float]] = {"p50": [], "p95": []}
    peer: dict[str, list[float]] = {"p50": [], "p95": []}
    per_query: list[list[float]] = [[] for _ in mix]
    for _ in range(repeats):
        fast, slow = [], []
        for i in range(queries):
            started = time.perf_counter()
            preview(index, mix[i % len(mix)], 10)
            fast.append(1000 * (time.perf_counter() - started))
            per_query[i % len(mix)].append(fast[-1])
        for i in range(pandas_queries):
            started = time.perf_counter()
            stats_with_pandas(frame, top, mix[i % len(mix)])
            slow.append(1000 * (time.perf_counter() - started))
        for figures, times in ((ours, fast), (peer, slow)):
            figures["p50"].append(float(np.percentile(times, 50)))
            figures["p95"].append(float(np.percentile(times, 95)))

    print(f"  {len(mix)} kinds of preview; median [range] over {repeats} repeats:")
    for name, figures, count in (
        ("ours (cell index)", ours, queries),
        ("peer: same query in pandas", peer, pandas_queries),
    ):
        print(
            f"  {name:<28} p50 {spread(figures['p50']):>22} ms   "
            f"p95 {spread(figures['p95']):>22} ms   ({count} queries a repeat)"
        )
    for body, times in zip(mix, per_query, strict=True):
        kind = json.dumps(body.filters.model_dump(exclude_none=True))
        print(f"    ours, median {statistics.median(times):7.2f} ms  {kind}")
    print(
        "  ratio pandas/ours: p50 "
        f"{statistics.median(peer['p50']) / statistics.median(ours['p50']):.0f}x, "
        f"p95 {statistics.median(peer['p95']) / statistics.median(ours['p95']):.0f}x"
        " (goal: ours p95 <= 100 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI mode")
    parser.add_argument(
        "--segments-only",
        action="store_true",
        help="run only the in-process segment preview part (needs no data folder)",
    )
    parser.add_argument("--peer", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        run_fastapi_peer(args.peer)
        return
    if args.segments_only:
        print(f"segment preview, in process; quick={args.quick}")
        segment_part(args.quick)
        return

    from features.cards import pseudonym
    from features.settings import Settings
    from features.warehouse import Warehouse
    from serving.auth import create_key

    settings = Settings()
    quick = args.quick
    started = time.perf_counter()
    reps = 1 if quick else 3
    n_single, s_single = (100, 2.0) if quick else (2000, 30.0)
    n_batch, s_batch = (100, 2.0) if quick else (4000, 30.0)
    n_big = 20 if quick else 400
    memory_seconds = 2.0 if quick else 60.0

    keys_file = Path(tempfile.mkdtemp()) / "bench_keys.json"
    key = create_key(keys_file, "admin")
    os.environ["PRECISION_SERVING_API_KEYS_FILE"] = str(keys_file)
    numbers = (
        Warehouse(settings.warehouse_dir)
        .read_table("card_holders", ["card_number"])["card_number"]
        .tolist()
    )
    print(f"data {settings.data_dir}: {len(numbers):,} card holders; quick={quick}")

    print("\n/recommend through BentoML (ours, tuned) and peers, same data")
    ours = bentoml_server({})
    ours.wait_ready()
    try:
        prime(ours.port, key, numbers)
        one = measure(ours.port, key, numbers, 1, 1, n_single, s_single, reps)
        print_row("ours: 1 card, 1 connection", one)
        ten, peer_ten = side_by_side(ours, key, numbers, n_batch, s_batch, reps)
        print_row("ours: 10 cards, 16 connections", ten)
        print_row("peer: bare FastAPI, 10 cards, 16 conn", peer_ten)
        big = measure(ours.port, key, numbers, 100, 1, n_big, s_batch, reps)
        print_row("ours: 100 cards, 1 connection", big)
        load(ours.port, key, numbers, 10, 16, 400, 2 if quick else 5)
        before = ours.worker_rss_mb()
        load(ours.port, key, numbers, 10, 16, 10**7, memory_seconds)
        after = ours.worker_rss_mb()
        print(
            f"  worker RSS after warm-up {before:.0f} MB, after {memory_seconds:.0f} s "
            f"at 16 connections {after:.0f} MB ({100 * (after / before - 1):+.1f} %)"
        )
        print(f"  feature cache of ours: {cache_figures(ours.port, key)}")
    finally:
        ours.stop()

    stock_one = {"p99": [float("nan")]}
    cold = {"p99": [float("nan")]}
    if not quick:  # two more servers: too slow to start in CI
        uncached = bentoml_server({"PRECISION_SERVING_FEATURE_CACHE_SECONDS": "0"})
        uncached.wait_ready()
        try:
            cold = measure(uncached.port, key, numbers, 100, 1, n_big, s_batch, reps)
            print_row("ours, cache off: 100 cards", cold)
        finally:
            uncached.stop()
        stock = bentoml_server(STOCK_ENV)
        stock.wait_ready()
        try:
            stock_one = measure(
                stock.port, key, numbers, 1, 1, n_single, s_single, reps
            )
            print_row("peer: BentoML stock, 1 card", stock_one)
            stock_cold = measure(stock.port, key, numbers, 100, 1, n_big, s_batch, reps)
            print_row("stock settings, cache off: 100 cards", stock_cold)
        finally:
            stock.stop()

    keys = [pseudonym(n, settings.secret_bytes) for n in numbers]
    feast = feast_peer(keys, n_big)
    feast_p50, feast_p99 = np.percentile(feast, 50), np.percentile(feast, 99)
    print(
        f"  peer: stock Feast online read, 100 cards  p50 {feast_p50:.2f} ms   "
        f"p99 {feast_p99:.2f} ms"
    )

    print("\nratios")
    print(
        f"  1 card p99, ours vs BentoML stock: {np.median(one['p99']):.1f} vs "
        f"{np.median(stock_one['p99']):.1f} ms (goal <= 10 ms)"
    )
    rate_ratio = np.median(ten["rate"]) / np.median(peer_ten["rate"])
    print(
        f"  10 cards x 16: rate {rate_ratio:.2f}x of FastAPI (goal >= 0.8x), p99 "
        f"{np.median(ten['p99']) / np.median(peer_ten['p99']):.2f}x (goal <= 1.5x)"
    )
    print(
        f"  100 cards p99 end to end: {np.median(big['p99']):.1f} ms with the feature "
        f"cache, {np.median(cold['p99']):.1f} ms with every card read from the "
        "store (goal <= 30 ms)"
    )

    print("\nsegment preview, in process")
    segment_part(quick)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


def segment_part(quick: bool) -> None:
    """The segment rows at their size: 1,000,000 cards, or 20,000 when quick."""
    if quick:
        segment_rows(20_000, queries=24, pandas_queries=6, repeats=2)
    else:
        segment_rows(1_000_000, queries=240, pandas_queries=12, repeats=3)


def cache_figures(port: int, key: str) -> str:
    """Hits and misses of the service's feature cache, from ``/info``."""
    import httpx

    info = httpx.get(
        f"http://127.0.0.1:{port}/info", headers={"X-API-Key": key}, timeout=30
    ).json()
    cache = info.get("feature_cache", {})
    hits, misses = cache.get("hits", 0), cache.get("misses", 0)
    share = 100 * hits / max(hits + misses, 1)
    pauses = info.get("garbage_collector", {})
    return (
        f"{hits:,} hits, {misses:,} misses ({share:.1f} % hits); collector "
        f"pauses by generation {pauses}"
    )


if __name__ == "__main__":
    main()
