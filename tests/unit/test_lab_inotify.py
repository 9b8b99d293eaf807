"""The lab raises root's inotify instance limit for many systemd hosts, and never lowers it."""

from __future__ import annotations

from pathlib import Path

from provisioner.lab.hosts import ensure_inotify_instances


def test_raised_for_many_hosts_never_lowered(tmp_path: Path) -> None:
    knob = tmp_path / "max_user_instances"
    knob.write_text("128\n")
    msg = ensure_inotify_instances(20, knob)
    assert msg is not None and "from 128 to 512" in msg and knob.read_text().strip() == "512"
    assert ensure_inotify_instances(3, knob) is None and knob.read_text().strip() == "512"
    assert ensure_inotify_instances(50, knob) is not None and knob.read_text().strip() == "800"
    knob.write_text("100000\n")
    assert ensure_inotify_instances(50, knob) is None and knob.read_text().strip() == "100000"
