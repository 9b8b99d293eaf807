"""lab_exec's output survives an exec whose attached stream came back empty (seen on bookworm and forky hosts)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from typing import Any

import docker.errors
import pytest

from provisioner.errors import LabError
from provisioner.lab import hosts


class FakeContainer:
    """Runs each exec with the local sh (in a temp dir standing in for the host's /var/tmp) and, like the
    flaky attach, can drop what the command printed on the stream."""

    def __init__(self, root: Any, lose_stream: bool) -> None:
        self.root, self.lose_stream = root, lose_stream
        self.calls: list[list[str]] = []

    def _local(self, path: str) -> str:
        return str(self.root / path.removeprefix("/var/tmp/"))

    def exec_run(self, argv: list[str]) -> tuple[int, bytes]:
        self.calls.append(argv)
        argv = [a.replace("/var/tmp/", f"{self.root}/") for a in argv]
        done = subprocess.run(argv, capture_output=True, check=False)
        return done.returncode, b"" if self.lose_stream else done.stdout + done.stderr

    def get_archive(self, path: str) -> tuple[list[bytes], dict[str, Any]]:
        try:
            data = open(self._local(path), "rb").read()  # noqa: SIM115
        except FileNotFoundError:
            raise docker.errors.NotFound("no such file") from None
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(path.rsplit("/", 1)[-1])
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return [buf.getvalue()], {}


class FakeClient:
    def __init__(self, container: FakeContainer | None) -> None:
        self.containers = self
        self.container = container

    def get(self, name: str) -> FakeContainer:
        if self.container is None:
            raise docker.errors.NotFound(name)
        return self.container


@pytest.mark.parametrize("lose_stream", [False, True])
def test_output_and_exit_code_come_back_even_when_the_stream_is_lost(tmp_path: Any, lose_stream: bool) -> None:
    box = FakeContainer(tmp_path, lose_stream)
    client: Any = FakeClient(box)
    assert hosts.exec_in(client, "c", "echo present; echo oops >&2; exit 3") == (3, "present\noops\n")
    assert hosts.exec_in(client, "c", ["printf", "%s", "a b"]) == (0, "a b")
    assert list(tmp_path.iterdir()) == []  # the output files are removed
    assert box.calls[0][:2] == ["sh", "-c"] and box.calls[1][:2] == ["rm", "-f"]


def test_missing_container_names_the_fix() -> None:
    client: Any = FakeClient(None)
    with pytest.raises(LabError, match=r"lab host container c does not exist\n    fix: `provisioner lab up`"):
        hosts.exec_in(client, "c", "true")
