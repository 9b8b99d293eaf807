"""End-to-end tests share this machine's 2 cores and its lab network: one e2e session at a time.

Every pytest session that runs an e2e test takes an exclusive lock first (waiting for another session to
finish), so two suites started side by side (two developers, a benchmark and a test run) queue instead of
starving each other's hosts and timing out. Set PROVISIONER_E2E_LOCK to use another lock file.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator

import pytest

LOCK = os.environ.get("PROVISIONER_E2E_LOCK", "/tmp/provisioner-e2e-session.lock")


@pytest.fixture(scope="session", autouse=True)
def _one_e2e_session_at_a_time() -> Iterator[None]:
    with open(LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t0 = time.monotonic()
            print(f"\nwaiting for another e2e session to finish ({LOCK})", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
            print(f"waited {time.monotonic() - t0:.0f}s for the e2e lock", file=sys.stderr)
        yield
