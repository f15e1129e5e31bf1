"""The PostgreSQL listener's wake-up pipe, without a server: never written once closed."""

from __future__ import annotations

import os

from tether.worlds.postgres_listener import Listener


def idle_listener() -> Listener:
    """A listener that was never started (its thread would need a server)."""
    return Listener(
        "host=nowhere", "public", "token", "postgresql://nowhere", set, lambda c, s: None
    )


def test_a_stopped_listener_never_writes_to_a_descriptor_reused_by_another_file() -> None:
    listener = idle_listener()
    listener.stop()
    read, write = os.pipe()  # takes the lowest free numbers: those the listener closed
    try:
        os.set_blocking(read, False)
        listener.changed()  # a World that closed may still be told of a change
        try:
            leaked = os.read(read, 16)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        os.close(read)
        os.close(write)


def test_changes_never_block_a_listener_whose_thread_does_not_drain_the_pipe() -> None:
    listener = idle_listener()
    try:
        for _ in range(100_000):  # more than a pipe holds
            listener.changed()
    finally:
        listener.stop()
