"""How PostgreSQL Worlds hear each other: the thread that LISTENs for their NOTIFYs.

A commit announces its signal (``signals``) on ``CHANNEL``, which Worlds
with readers listen on (a run's result, a stream, the web UI). Work that
became due for one deployment also wakes one live worker of it, on that
worker's own channel (``worker_channel``); other work (no live worker to
pick, several deployments) goes to ``WORK_CHANNEL``, which Worlds with
workers listen on. So an added worker costs no wake-up per commit of its
peers, and readers hear nothing meant for workers alone. Payloads are
``schema|sender|signal``, so that a World ignores other schemas and its own
commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from tether.worlds.signals import merge_signals

log = logging.getLogger("tether.postgres")

#: Every commit's signal, for readers; payloads name schema and sender.
CHANNEL = "tether_changes"
#: Work for deployments none of whose live workers was woken by name.
WORK_CHANNEL = "tether_work"
#: The prefix of a worker's own channel: ``WORKER_PREFIX`` + md5 of its id.
WORKER_PREFIX = "tether_w_"
#: How often an idle listener looks up from its connection (closing or a new channel wake
#: it at once, through a pipe): rare, so that an idle process costs next to nothing.
LISTEN_TICK = 5.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


def worker_channel(worker_id: str) -> str:
    """The channel a worker is woken on by name (``md5(worker_id)`` in SQL spells the same)."""
    return WORKER_PREFIX + hashlib.md5(worker_id.encode()).hexdigest()


class Listener:
    """A thread that hears other Worlds' commits on ``schema`` and passes their signals on.

    ``heard(channel, signal)`` is called from the thread. The channels are
    those ``channels()`` returns; when that changes (``changed``), the thread
    listens again. It reconnects with backoff when the link drops, and after
    (re)connecting or listening on a new channel reports ``"w"``: commits may
    have been missed while it was not listening.
    """

    def __init__(
        self,
        conninfo: str,
        schema: str,
        token: str,
        shown_url: str,
        channels: Callable[[], Iterable[str]],
        heard: Callable[[str, str], None],
    ) -> None:
        self._conninfo = conninfo
        self._schema = schema
        self._token = token
        self._shown_url = shown_url
        self._channels = channels
        self._heard = heard
        self._listening: set[str] = set()
        self._stale = threading.Event()
        #: Written to wake the thread from its wait: the World closed, or channels changed.
        self._nudge_read, self._nudge_write = os.pipe()
        for fd in (self._nudge_read, self._nudge_write):
            os.set_blocking(fd, False)  # a full pipe already says "wake up"
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start listening, unless it does already (or was stopped)."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._listen, name="tether-postgres-listen", daemon=True
                )
                self._thread.start()

    def changed(self) -> None:
        """``channels()`` may say otherwise now: listen again."""
        self._stale.set()
        self._nudge()

    def _nudge(self) -> None:
        # Under the lock: once stop() closed the pipe its numbers may name another file.
        with self._lock, contextlib.suppress(OSError):  # full: the thread wakes anyway
            if self._nudge_write >= 0:
                os.write(self._nudge_write, b"x")

    def stop(self) -> None:
        """Stop listening and wait for the thread to end."""
        self._closed = True
        self._nudge()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with self._lock:
            if self._nudge_write >= 0 and (self._thread is None or not self._thread.is_alive()):
                os.close(self._nudge_read)
                os.close(self._nudge_write)
                self._nudge_read = self._nudge_write = -1

    def _listen(self) -> None:
        delay = BACKOFF_MIN
        while not self._closed:
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError:
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_MIN
            self._listening = set()
            try:
                with conn:
                    self._listen_again(conn)
                    while not self._closed:
                        if self._stale.is_set():
                            self._listen_again(conn)
                        # Wait for the server or a nudge, in one system call: no polling.
                        ready, _, _ = select.select(
                            [conn.fileno(), self._nudge_read], [], [], LISTEN_TICK
                        )
                        if self._nudge_read in ready:
                            os.read(self._nudge_read, 4096)
                        heard: dict[str, str] = {}
                        # After a nudge too: a LISTEN may have received notifications.
                        if ready:
                            # Take everything delivered, then wake everyone once.
                            for note in conn.notifies(timeout=0):
                                signal = self._signal(note.payload)
                                heard[note.channel] = merge_signals(
                                    heard.get(note.channel, ""), signal
                                )
                        for channel, signal in heard.items():
                            if signal:
                                self._heard(channel, signal)
            except psycopg.Error:
                if not self._closed:
                    log.warning("listener lost its connection to %s; reconnecting", self._shown_url)

    def _listen_again(self, conn: psycopg.Connection[Any]) -> None:
        """LISTEN on the channels wanted now (UNLISTEN the rest); report ``"w"`` if any is new."""
        self._stale.clear()
        wanted = set(self._channels())
        for channel in sorted(self._listening - wanted):
            conn.execute(f"UNLISTEN {channel}")
        new = wanted - self._listening
        for channel in sorted(new):
            conn.execute(f"LISTEN {channel}")
        self._listening = wanted
        if new:
            self._heard(WORK_CHANNEL, "w")  # commits before we listened went unheard

    def _signal(self, payload: str) -> str:
        """The signal of another World's commit on our schema, else ``""``."""
        schema_name, _, rest = payload.partition("|")
        sender, _, signal = rest.partition("|")
        if schema_name != self._schema or sender == self._token:
            return ""
        return signal or "w"
