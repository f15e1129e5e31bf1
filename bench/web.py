"""How fast the web UI shows a World of 100,000 runs, and what its idle open pages cost.

A World is filled with RUNS runs by one SQL statement (after ``open_world`` ran the
migrations and a worker registered one of the two deployments), then a real
``tether web`` process serves it. Measured: GET of the runs page (first page, a
status filter, an id-prefix search) over HTTP, time to the load event in
Chromium, and the database work of the server while PAGES browser pages sit
open on the runs page, against the same server with none open. Also checked: how
many pages of the UI one browser profile (one connection pool) can hold open.
tether only. Writes ``WEB-RESULTS-<backend>.md``.

    .venv/bin/python web.py [--backend sqlite|postgres] [--runs 100000] [--requests 20]
                            [--loads 10] [--pages 20] [--idle 10]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from playwright.sync_api import Browser, Page, sync_playwright

import tether
from common import percentile
from tether import workflow
from tether.worlds import open_world

HERE = Path(__file__).resolve().parent
POSTGRES = os.environ.get("TETHER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The deployment no worker registered (its runs still list it) and the one a worker did.
OLD, NEW = "web-bench-v1", "web-bench-v2"
DAY = 86400.0
SEARCH = "run_00"  # ids are run_ and 32 hex digits: ~1/256 of the runs start so


@workflow
async def place_order(n: int) -> int:
    return n


@workflow
async def refund(n: int) -> int:
    return n


@workflow
async def nightly_report(n: int) -> int:
    return n


WORKFLOWS = (place_order.name, refund.name, nightly_report.name)

# One statement's SELECT list for the generated runs, ``i`` from 0: mostly completed, some
# failed, running and pending (spread by i * 37 % 100), created one by one over 30 days, the
# older two thirds on OLD. Parameters: 3 workflow names, count, OLD, NEW, first time, gap.
_STATUS = (
    "CASE WHEN i * 37 % 100 < 85 THEN 'completed' WHEN i * 37 % 100 < 93 THEN 'failed'"
    " WHEN i * 37 % 100 < 97 THEN 'running' ELSE 'pending' END"
)
_ROWS = (
    "SELECT {run_id}, CASE i % 3 WHEN 0 THEN ? WHEN 1 THEN ? ELSE ? END,"
    " CASE WHEN i * 3 < ? * 2 THEN ? ELSE ? END, " + _STATUS + ", '[[],{{}}]',"
    " ? + i * ?, {started}, {completed}, 1"
)
_COLUMNS = (
    "run_id, workflow_name, deployment_id, status, input, created_at, started_at,"
    " completed_at, last_seq"
)
_STARTED = "CASE WHEN i * 37 % 100 < 97 THEN created_at + 0.05 END"
_COMPLETED = "CASE WHEN i * 37 % 100 < 93 THEN created_at + 0.05 + (i % 40) * 0.1 END"


#: A server's counters so far: (its pid, the window's start) -> name -> value.
Probe = Callable[[int, float], dict[str, float]]


@dataclass
class Timings:
    """One page's times, in seconds: to the first byte and to the last, per request."""

    path: str
    first_byte: list[float]
    total: list[float]
    rows: int
    size: int


@dataclass
class Idle:
    """What the server did over one idle window: a counter each, and the pages open."""

    label: str
    counters: dict[str, float]
    connections: int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20, help="HTTP GETs per page")
    parser.add_argument("--loads", type=int, default=10, help="page loads in Chromium")
    parser.add_argument("--pages", type=int, default=20, help="pages open while idle")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds per idle window")
    args = parser.parse_args()
    started = time.perf_counter()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tether-web-") as tmp:
        schema = f"web_bench_{uuid.uuid4().hex[:8]}"
        url = (
            f"sqlite:///{tmp}/web.db"
            if args.backend == "sqlite"
            else f"{POSTGRES}?schema={schema}&application_name={schema}"
        )
        try:
            built = build_world(url, args.backend, schema, args.runs)
            results = measure(args, url, schema)
        finally:
            if args.backend == "postgres":
                with psycopg.connect(POSTGRES, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    report(args, built, *results, time.perf_counter() - started, load)


# -- the World --------------------------------------------------------------------------


def build_world(url: str, backend: str, schema: str, runs: int) -> float:
    """Make the World at ``url`` hold ``runs`` runs; the seconds the insert took."""
    world = open_world(url)  # the migrations
    try:
        with tether.Worker(world=world, deployment_id=NEW):
            pass  # registers NEW (its manifest, a stopped worker)
    finally:
        world.close()
    now = time.time()
    gap = 30 * DAY / runs
    params = (*WORKFLOWS, runs, OLD, NEW, now - 30 * DAY, gap)
    t0 = time.perf_counter()
    if backend == "sqlite":
        insert_sqlite(url.removeprefix("sqlite:///"), runs, params)
    else:
        insert_postgres(schema, runs, params)
    return time.perf_counter() - t0


def select_rows(run_id: str) -> str:
    """The SELECT list of the generated runs (``?`` placeholders), ``run_id`` its id."""
    return _ROWS.format(
        run_id=run_id,
        started=_STARTED.replace("created_at", "(? + i * ?)"),
        completed=_COMPLETED.replace("created_at", "(? + i * ?)"),
    )


def insert_sqlite(path: str, runs: int, params: tuple[object, ...]) -> None:
    """The runs, by a recursive CTE counting i from 0."""
    rows = select_rows("'run_' || lower(hex(randomblob(16)))")
    statement = (
        f"INSERT INTO runs ({_COLUMNS}) WITH RECURSIVE n(i) AS"
        f" (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) {rows} FROM n"
    )
    first, gap = params[-2:]
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(statement, (runs, *params, first, gap, first, gap))


def insert_postgres(schema: str, runs: int, params: tuple[object, ...]) -> None:
    """The runs, by generate_series; then VACUUM ANALYZE, as autovacuum would soon do."""
    rows = select_rows("'run_' || md5(i::text)").replace("%", "%%").replace("?", "%s")
    statement = (
        f'INSERT INTO "{schema}".runs ({_COLUMNS}) {rows} FROM generate_series(0, %s - 1) AS i'
    )
    first, gap = params[-2:]
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(statement, (*params, first, gap, first, gap, runs))
        conn.execute(f'VACUUM ANALYZE "{schema}".runs')


# -- the server ---------------------------------------------------------------------------


@contextlib.contextmanager
def serve(url: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A ``tether web`` process on a free port, once it answers; stopped after."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "tether"), "web", "--backend", url]
    proc = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
                    answer.read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tether web did not answer on port {port}") from None
                time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(
    args: argparse.Namespace, url: str, schema: str
) -> tuple[list[Timings], list[float], list[float], tuple[int, bool], list[Idle]]:
    """HTTP timings, Chromium load times (again, and first visits), one profile's page limit,
    and the idle windows."""
    sqlite = args.backend == "sqlite"
    probe = sqlite_probe if sqlite else postgres_probe(schema)
    # An idle PostgreSQL backend flushes its statistics up to 10 s late (PGSTAT_IDLE_INTERVAL):
    # the earlier requests' must have landed before a window, and the window's after it.
    waits = (3.0, 0.0) if sqlite else (11.0, 11.0)
    with serve(url) as (proc, port), sync_playwright() as playwright:

        def quiet(label: str) -> Idle:
            return idle(label, proc.pid, port, probe, args.idle, *waits)

        page_url = f"http://127.0.0.1:{port}/"
        counted = [quiet("0 pages, none opened yet (no World listener)")]
        paths = ["/", "/?status=failed", f"/?q={SEARCH}"]
        timings = [get_times(port, path, args.requests) for path in paths]
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            loads = load_times(browser, page_url, args.loads)
            limit = one_profile(browser, page_url)
            counted.append(quiet("0 pages, after some were open (listener on)"))
            pages, firsts = open_pages(browser, page_url, args.pages)
            counted.append(quiet(f"{len(pages)} pages open"))
        finally:
            browser.close()
    return timings, loads, firsts, limit, counted


# -- HTTP ---------------------------------------------------------------------------------


def get_times(port: int, path: str, requests: int, warmups: int = 2) -> Timings:
    """``requests`` GETs of ``path`` on one keep-alive connection, after ``warmups``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    first_byte: list[float] = []
    total: list[float] = []
    body = b""
    try:
        for i in range(warmups + requests):
            t0 = time.perf_counter()
            conn.request("GET", path)
            answer = conn.getresponse()
            t1 = time.perf_counter()
            body = answer.read()
            t2 = time.perf_counter()
            if answer.status != 200:
                raise RuntimeError(f"GET {path}: {answer.status} {body[:300]!r}")
            if i >= warmups:
                first_byte.append(t1 - t0)
                total.append(t2 - t0)
    finally:
        conn.close()
    return Timings(path, first_byte, total, body.count(b"<tr data-run="), len(body))


# -- Chromium -----------------------------------------------------------------------------


def is_refresh(url: str) -> Callable[..., bool]:
    """Whether a response is the page's own refresh (its script's fetch on the first push)."""
    return lambda response: response.request.resource_type == "fetch" and response.url == url


def visit(page: Page, url: str) -> float:
    """Seconds to the load event; returns once the page's script has refreshed it too."""
    with page.expect_response(is_refresh(url), timeout=30_000):
        t0 = time.perf_counter()
        page.goto(url, wait_until="load", timeout=30_000)
        took = time.perf_counter() - t0
    return took


def load_times(browser: Browser, url: str, loads: int, warmups: int = 2) -> list[float]:
    """Seconds from ``goto`` to the load event, ``loads`` times in one page."""
    context = browser.new_context()
    try:
        page = context.new_page()
        times = [visit(page, url) for _ in range(warmups + loads)]
    finally:
        context.close()
    return times[warmups:]


#: In a page: whether a fetch of the page itself answers within 3 s.
ANSWERS = """async () => {
  const stop = new AbortController();
  setTimeout(() => stop.abort(), 3000);
  try { return (await fetch(location.href, {signal: stop.signal, cache: "no-store"})).ok; }
  catch (err) { return false; }
}"""


def one_profile(browser: Browser, url: str, tries: int = 7) -> tuple[int, bool]:
    """Pages of one browser context that load (of ``tries``), and whether the first of
    them can still fetch once the others are open (HTTP/1.1: 6 connections per host)."""
    context = browser.new_context()
    try:
        loaded = 0
        pages = []
        for _ in range(tries):
            page = context.new_page()
            pages.append(page)
            with contextlib.suppress(Exception):
                page.goto(url, wait_until="load", timeout=3000)
                loaded += 1
        answered = pages[0].evaluate(ANSWERS)
    finally:
        context.close()
    return loaded, bool(answered)


def open_pages(browser: Browser, url: str, count: int) -> tuple[list[Page], list[float]]:
    """``count`` pages on ``url``, each in a context of its own (a connection pool each), and
    the seconds each took to its load event (a first visit: a new renderer, nothing cached)."""
    pages = []
    times = []
    for _ in range(count):
        page = browser.new_context().new_page()
        times.append(visit(page, url))
        pages.append(page)
    return pages, times


# -- the idle server ----------------------------------------------------------------------


def idle(
    label: str, pid: int, port: int, probe: Probe, seconds: float, settle: float, grace: float
) -> Idle:
    """The server's counters over ``seconds`` of quiet, ``settle`` s after the last request;
    the second reading ``grace`` s later still; then the connections open to the server."""
    time.sleep(settle)
    start = time.time()
    before = probe(pid, start)
    time.sleep(seconds + grace)
    after = probe(pid, start)
    return Idle(label, {k: after[k] - before[k] for k in before}, established(port))


def sqlite_probe(pid: int, _since: float) -> dict[str, float]:
    """The server's CPU seconds so far, all its threads (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"server CPU s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")}


def postgres_probe(schema: str) -> Probe:
    """Commits in the test database and scans of the bench schema's tables so far, and how
    many of the server's connections (its application_name is the schema's name) began a
    query since a time."""
    statement = (
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
        " (SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0) FROM pg_stat_user_tables"
        "  WHERE schemaname = %s),"
        " (SELECT count(*) FROM pg_stat_activity"
        "  WHERE application_name = %s AND query_start >= to_timestamp(%s))"
    )

    def probe(_pid: int, since: float) -> dict[str, float]:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            row = conn.execute(statement, (schema, schema, since)).fetchone()
        assert row is not None
        return {
            "commits, whole db": int(row[0]),
            "scans, bench schema": int(row[1]),
            "server connections that queried": int(row[2]),
        }

    return probe


def established(port: int) -> int:
    """Open TCP connections to the server's port (its side of each), from /proc/net/tcp."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                count += 1
    return count


# -- the report ---------------------------------------------------------------------------


def ms(seconds: list[float], pct: float) -> str:
    return f"{percentile(seconds, pct) * 1000:.1f} ms"


def report(
    args: argparse.Namespace,
    built: float,
    timings: list[Timings],
    loads: list[float],
    firsts: list[float],
    limit: tuple[int, bool],
    counted: list[Idle],
    elapsed: float,
    load: float,
) -> None:
    runs = f"{args.runs:,}"
    sqlite = args.backend == "sqlite"
    names = list(counted[0].counters)
    lines = [
        f"# tether web: the runs page over {runs} runs, and idle open pages ({args.backend})",
        "",
        "| page (`tether web` process) | rows, size | first byte p50 | p95 | total p50 | p95 |",
        "|---|---|---|---|---|---|",
        *(
            f"| GET `{t.path}` | {t.rows}, {t.size / 1024:.0f} KB | {ms(t.first_byte, 50)}"
            f" | {ms(t.first_byte, 95)} | {ms(t.total, 50)} | {ms(t.total, 95)} |"
            for t in timings
        ),
        f"| Chromium: `/` to its load event | | | | {ms(loads, 50)} | {ms(loads, 95)} |",
        f"| Chromium: the same, first visit in a new context | | | | {ms(firsts, 50)}"
        f" | {ms(firsts, 95)} |",
        "",
        f"| idle {args.idle:.0f} s, no request | " + " | ".join(names) + " | connections |",
        "|---|" + "---|" * len(names) + "---|",
        *(
            f"| {w.label} | "
            + " | ".join(_count(w.counters[n]) for n in names)
            + f" | {w.connections} |"
            for w in counted
        ),
        "",
    ]
    loaded, answered = limit
    lines += [
        f"- `bench/web.py --backend {args.backend} --runs {args.runs}`: {os.cpu_count()} cores"
        f" (1-minute load average {load:.1f} at the start), {elapsed:.0f} s in all. World:"
        " `open_world` (migrations), a `tether.Worker` of"
        f" `{NEW}` started and stopped, then {runs} runs inserted by one SQL statement in"
        f" {built:.1f} s"
        f" ({'recursive CTE' if sqlite else 'generate_series, then VACUUM ANALYZE'}; 85%"
        " completed, 8% failed, 4% running, 3% pending; 3 workflows; 2 deployments, one never"
        " registered; created over 30 days; ids `run_` + 32 hex digits).",
        f"- HTTP: {args.requests} GETs per page after 2 warm-ups on one keep-alive http.client"
        " connection (first byte: the response's headers read). Chromium (Playwright,"
        f' headless, /usr/bin/chromium): `page.goto(url, wait_until="load")`, {len(loads)}'
        " loads in one page after 2 warm-ups, each followed by the page's own refresh (its"
        " script fetches the page again on the first server-sent event).",
        (
            "- Idle: the server process's CPU time (utime + stime, all threads, /proc/PID/stat,"
            " 10 ms ticks) over the window, 3 s after the last request; the World listener the"
            " first page starts is SQLite's `PRAGMA data_version` poll, every 5 ms."
            if sqlite
            else "- Idle: commits in the whole `test` database (pg_stat_database.xact_commit;"
            " other sessions count too; pg_stat_statements is not preloaded), scans of the"
            " bench schema's tables (pg_stat_user_tables seq + idx), and the server's"
            " connections (its application_name) whose last query began in the window"
            " (pg_stat_activity). A backend's statistics land up to 10 s late, so each window"
            " starts 11 s after the last request and is read 11 s after its end: 21 idle"
            " seconds counted."
        )
        + f" {args.pages} pages, each in a browser context of its own (their loads are the"
        " table's first visits), then left open; connections: the server's established TCP"
        " connections at the end (/proc/net/tcp), i.e. the pages' `/live` streams.",
        f"- One browser context (one connection pool, as one browser profile): {loaded} of 7"
        " pages of the UI reach their load event within 3 s, and with those open a fetch from"
        f" the first {'answers' if answered else 'gets no answer in 3 s'} (Chromium keeps 6"
        " HTTP/1.1 connections per host, and each page's `/live` stream holds one).",
        "",
    ]
    text = "\n".join(lines)
    (HERE / f"WEB-RESULTS-{args.backend}.md").write_text(text)
    print(text)


def _count(value: float) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
