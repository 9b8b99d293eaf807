"""docker_image, data-driven: (images on the host, archive or registry) -> plan; the load command in a real shell."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from provisioner.connection.fake import FakeConnection
from provisioner.engine.executor import apply_change
from provisioner.errors import TaskError
from provisioner.modules import docker_image
from provisioner.modules._docker import archive_info
from provisioner.modules.base import NoOp
from tests.builders import (
    changes,
    ctx_for,
    facts,
    inventory,
    make_archive,
    plan,
)


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "probe.tar"
    return path, make_archive(path)


PROBE_ID = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("images", "use_archive", "expect"),
    [
        # registry: present by tag -> no-op; absent -> pull
        ({"provisioner-lab/probe:latest": PROBE_ID}, False, "noop:is present"),
        ({}, False, "pull provisioner-lab/probe:latest"),
        # archive: the archive's id under the tag -> no-op (nothing uploaded)
        ({"provisioner-lab/probe:latest": "ARCHIVE"}, True, "noop:archive's image id"),
        # the archive's id loaded under another tag -> only a tag
        ({"other:1": "ARCHIVE"}, True, "tag "),
        # a different image under the tag, or nothing -> upload and load
        ({"provisioner-lab/probe:latest": PROBE_ID}, True, "load provisioner-lab/probe:latest from probe.tar"),
        ({}, True, "load provisioner-lab/probe:latest from probe.tar"),
    ],
)
def test_docker_image_plan(archive: tuple[Path, str], images: dict[str, str], use_archive: bool, expect: str) -> None:
    path, image_id = archive
    images = {k: (image_id if v == "ARCHIVE" else v) for k, v in images.items()}
    inv = inventory(verify={"image": "provisioner-lab/probe:latest", "image_archive": path if use_archive else None})
    p = plan(docker_image.DockerImageModule(), facts(images=images), inv, {"from_inventory": "verify"})
    if expect.startswith("noop:"):
        assert isinstance(p, NoOp) and expect[5:] in p.reason
    else:
        (c,) = changes(p)
        assert c.description.startswith(expect)


def test_docker_image_needs_running_docker() -> None:
    with pytest.raises(TaskError, match="Docker is not running"):
        plan(docker_image.DockerImageModule(), facts(active=False, state="inactive"), args={"image": "busybox"})


def test_docker_image_args_take_one_source() -> None:
    with pytest.raises(ValueError, match="either 'image'"):
        docker_image.DockerImageArgs.model_validate({})
    assert docker_image.DockerImageArgs.model_validate({"image": "busybox"}).image == "busybox"


def test_archive_id_is_the_config_digest(archive: tuple[Path, str]) -> None:
    path, image_id = archive
    info = archive_info(path)
    assert info.image_id == image_id
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.repo_tags == ("provisioner-lab/probe:latest",)


def test_not_an_archive_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "x.tar"
    bad.write_bytes(b"not a tar")
    with pytest.raises(TaskError, match="not a `docker save` archive"):
        archive_info(bad)


def _run_load_command(tmp_path: Path, archive: Path, data: bytes) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """Run the real upload command in a local shell, with a `docker` stub that logs its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "docker.log"
    stub = bindir / "docker"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\nif [ "$1" = load ]; then test -s "$3"; fi\n')
    stub.chmod(0o755)
    cmd = docker_image.load_command(archive_info(archive), "provisioner-lab/probe:latest")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    res = subprocess.run(["sh", "-c", cmd], input=data, capture_output=True, env=env, check=False)
    return res, log.read_text() if log.exists() else ""


def test_upload_is_checksummed_loaded_tagged_and_removed(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, image_id = archive
    res, log = _run_load_command(tmp_path, path, path.read_bytes())
    assert res.returncode == 0, res.stderr
    load, tag = log.splitlines()
    temp = load.split()[-1]
    assert load.startswith("load -i /var/tmp/provisioner-image.")
    assert tag == f"tag {image_id} provisioner-lab/probe:latest"
    assert not Path(temp).exists()  # the temp file is always removed


def test_corrupted_upload_is_not_loaded(archive: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = archive
    res, log = _run_load_command(tmp_path, path, path.read_bytes()[:-10] + b"corrupted!")
    assert res.returncode == 65 and b"checksum mismatch" in res.stderr
    assert log == ""  # docker was never called


def test_load_apply_reports_checksum_mismatch(archive: tuple[Path, str]) -> None:
    path, _ = archive
    inv = inventory(verify={"image": "provisioner-lab/probe:latest", "image_archive": str(path)})
    f = facts()
    (c,) = changes(plan(docker_image.DockerImageModule(), f, inv, {"from_inventory": "verify"}))
    conn = FakeConnection("lab2").on("provisioner-image", rc=65, stderr="checksum mismatch")
    with pytest.raises(TaskError, match="does not match its sha256"):
        apply_change(ctx_for(conn, f, inv), c)
    assert conn.stats.bytes_sent == path.stat().st_size  # the archive went over the connection's stdin
