"""Streamed stdin: bytes, file objects and chunk iterables reach a command whole, in one round trip."""

from __future__ import annotations

import io

import pytest

from provisioner.connection.base import STDIN_CHUNK, RunResult, Stdin, stdin_chunks
from provisioner.connection.fake import FakeConnection

DATA = bytes(range(256)) * 1000  # 256 000 bytes: several chunks and a partial last one


@pytest.mark.parametrize(
    "source",
    [DATA, io.BytesIO(DATA), [DATA[:1000], DATA[1000:]], iter([DATA[:5], b"", DATA[5:]])],
    ids=["bytes", "file", "list", "iterator"],
)
def test_chunks_reassemble_and_stay_within_one_packet(source: Stdin) -> None:
    chunks = list(stdin_chunks(source))
    assert b"".join(chunks) == DATA
    assert all(0 < len(c) <= STDIN_CHUNK for c in chunks)


def test_streamed_stdin_is_one_round_trip_and_counted() -> None:
    seen: list[bytes | None] = []

    def respond(_cmd: str, stdin: bytes | None) -> RunResult:
        seen.append(stdin)
        return RunResult(0, "", "")

    conn = FakeConnection("h").on(r"^cat", respond=respond)
    assert conn.run("cat > /tmp/x", stdin=io.BytesIO(DATA)).ok
    assert seen == [DATA]
    assert conn.stats.round_trips == 1
    assert conn.stats.bytes_sent == len(DATA)
