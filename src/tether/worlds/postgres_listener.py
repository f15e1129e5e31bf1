"""How PostgreSQL Worlds hear each other: the thread that LISTENs for their NOTIFYs.

A commit announces its signal (``signals``) on ``CHANNEL``. Payloads are
``schema|sender|signal``, so that a World ignores other schemas and its own
commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from tether.worlds.signals import merge_signals

log = logging.getLogger("tether.postgres")

#: The channel every World of a database listens on; payloads name schema and sender.
CHANNEL = "tether_changes"
#: How often the listener looks up from its connection to see whether the World closed.
LISTEN_TICK = 0.25
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


class Listener:
    """A thread that hears other Worlds' commits on ``schema`` and passes their signals on.

    It reconnects with backoff when the link drops, and after (re)connecting
    reports ``"w"``: commits may have been missed while it was not listening.
    """

    def __init__(
        self, conninfo: str, schema: str, token: str, shown_url: str, heard: Callable[[str], None]
    ) -> None:
        self._conninfo = conninfo
        self._schema = schema
        self._token = token
        self._shown_url = shown_url
        self._heard = heard
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

    def stop(self) -> None:
        """Stop listening and wait for the thread to end."""
        self._closed = True
        if self._thread is not None:
            self._thread.join(timeout=2 * LISTEN_TICK)

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
            try:
                with conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._heard("w")  # we may have missed commits while not listening
                    while not self._closed:
                        heard = ""
                        for note in conn.notifies(timeout=LISTEN_TICK, stop_after=1):
                            heard = self._signal(note.payload)
                        if heard:
                            # Take everything already delivered, then wake everyone once.
                            for note in conn.notifies(timeout=0):
                                heard = merge_signals(heard, self._signal(note.payload))
                            self._heard(heard)
            except psycopg.Error:
                if not self._closed:
                    log.warning("listener lost its connection to %s; reconnecting", self._shown_url)

    def _signal(self, payload: str) -> str:
        """The signal of another World's commit on our schema, else ``""``."""
        schema_name, _, rest = payload.partition("|")
        sender, _, signal = rest.partition("|")
        if schema_name != self._schema or sender == self._token:
            return ""
        return signal or "w"
