"""Streams, the writing side: ordered chunks a run's steps write (readers: ``tether.readers``).

``get_writable(namespace=None)`` in a workflow returns a ``StreamHandle``.
Steps write to it (``write``, ``writer()``, ``close()``); the handle is
serializable, so a continuation run that receives it writes to the same
stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tether import serde, storable
from tether.config import resolve_world
from tether.context import current_instance
from tether.errors import ContextError

DEFAULT_NAMESPACE = "default"


class StreamHandle:
    """A run's stream: steps write chunks to it; it can be passed to other runs."""

    def __init__(self, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.run_id = run_id
        self.namespace = namespace
        self.stream_id = f"{run_id}/{namespace}"

    def __repr__(self) -> str:
        return f"<StreamHandle {self.stream_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StreamHandle) and other.stream_id == self.stream_id

    def __hash__(self) -> int:
        return hash(self.stream_id)

    def write(self, chunk: Any) -> None:
        """Append one chunk, durably, visible to readers at once. Call it from a step.

        Steps run at least once: a retried step writes its chunks again.
        """
        self._append([chunk], close=False)

    def close(self) -> None:
        """Close the stream: readers stop after the last chunk; later writes fail."""
        self._append([], close=True)

    @contextlib.contextmanager
    def writer(self) -> Iterator[StreamWriter]:
        """``with stream.writer() as w: w.write(...)``: a writer for the block."""
        yield StreamWriter(self)

    def _append(self, chunks: list[Any], *, close: bool) -> None:
        if current_instance.get() is not None:
            raise ContextError(
                f"write to stream {self.stream_id} from a @step: workflow code is replayed, "
                "so its writes would repeat"
            )
        where = f"chunk of stream {self.stream_id}"
        texts = [serde.dumps(chunk, where=where) for chunk in chunks]
        resolve_world().append_chunks(self.stream_id, self.run_id, self.namespace, texts, close)


class StreamWriter:
    """Writes chunks to one stream (each write is durable at once)."""

    def __init__(self, stream: StreamHandle) -> None:
        self.stream = stream

    def write(self, chunk: Any) -> None:
        """Append one chunk."""
        self.stream.write(chunk)


def get_writable(namespace: str | None = None) -> StreamHandle:
    """The run's stream named ``namespace`` (default ``"default"``). Call it in a workflow.

    Raises ``InvalidIdentifierError`` (a ``ValueError``) for a namespace no
    World can store (``storable.check_identifier``: over 256 characters, a NUL
    or a lone surrogate).
    """
    instance = current_instance.get()
    if instance is None:
        raise ContextError("get_writable() is called inside a @workflow; pass the handle to steps")
    if namespace:
        storable.check_identifier(namespace, "stream namespace")
    return StreamHandle(instance.run_id, namespace or DEFAULT_NAMESPACE)


serde.register_type(
    StreamHandle,
    "stream",
    encode=lambda handle: [handle.run_id, handle.namespace],
    decode=lambda value: StreamHandle(value[0], value[1]),
)
