"""The generated facts script, run by /bin/sh on this machine: with the tools it has, with most tools
missing, and without a temp dir (the Docker jobs then run inline). Every section must parse, never raise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner.facts import FIREWALL, HostFacts, all_sections, facts_script, parse_facts

INFO = {"ServerVersion": "26.1.5+dfsg1", "Driver": "overlay2", "CgroupVersion": "1", "ContainersRunning": 1}
INSPECT = [
    {"Name": "n1", "Id": "N1", "Driver": "bridge", "IPAM": {"Config": [{"Subnet": "198.18.61.0/24"}]}},
    {"Name": "/c1", "Id": "C1", "State": {"Running": True}, "Config": {"Image": "busybox"},
     "NetworkSettings": {"Networks": {"n1": {"IPAddress": "198.18.61.2", "IPPrefixLen": 24}},
                         "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}}},
]  # fmt: skip


def run(script: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-s"], input=script, capture_output=True, text=True, timeout=90, env={"PATH": path}, check=False
    )


def gather_all(path: str) -> HostFacts:
    res = run(facts_script(["/etc/hostname"], {"ok": "true"}, sections="all"), path)
    assert res.returncode == 0, res.stderr
    facts = parse_facts("local", res.stdout, files=["/etc/hostname"], probes=["ok"], sections="all")
    assert facts.sections == all_sections() and facts.probes == {"ok": 0}
    return facts


def test_every_section_parses_with_this_machines_tools() -> None:
    f = gather_all(os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin")
    assert f.os.id and f.os.kernel and f.user and "lo" in f.interfaces
    assert f.file("/etc/hostname").exists
    assert f.docker.firewall.kernel_ip_forward is not None  # /proc/sys is always there on Linux


def test_every_section_is_empty_not_an_error_when_tools_are_missing(tmp_path: Path) -> None:
    # only what a bare busybox-like host has: no docker, timeout, ip, systemctl, dpkg-query, iptables-save
    for tool in ("cat", "mktemp", "rm", "base64", "stat", "tr", "sed", "tail", "uname", "id"):
        found = shutil.which(tool)
        assert found is not None
        (tmp_path / tool).symlink_to(found)
    f = gather_all(str(tmp_path))
    d = f.docker
    assert f.os.id and f.hostname and f.interfaces == {}  # hostname: no hostname tool, read from /etc
    assert not d.installed and d.state == "unknown" and d.package is None and d.base_execstart is None
    assert not d.active and d.info_error and d.networks == [] and d.containers == [] and d.images == {}
    assert d.driver == "" and not d.firewall.rules_read and d.firewall.filter_chains == []


@pytest.fixture()
def fake_docker(tmp_path: Path) -> Path:
    """A docker CLI that answers from fixed data and logs each call."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (tmp_path / "info.json").write_text(json.dumps(INFO))
    (tmp_path / "inspect.json").write_text(json.dumps(INSPECT))
    (bin_ / "docker").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >>{tmp_path}/calls\n'
        'case "$1 $2" in\n'
        f"  'info --format') cat {tmp_path}/info.json ;;\n"
        "  'images --no-trunc') echo 'busybox:latest sha256:bb' ;;\n"
        "  'network ls') echo N1 ;;\n"
        "  'ps -aq') echo C1 ;;\n"
        f"  'inspect N1') cat {tmp_path}/inspect.json ;;\n"
        '  *) echo "unexpected: $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    (bin_ / "docker").chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("tmpdir", [True, False])
def test_docker_jobs_with_and_without_a_temp_dir(fake_docker: Path, tmpdir: bool) -> None:
    path = f"{fake_docker / 'bin'}:/usr/bin:/bin"
    if not tmpdir:  # a mktemp that fails: the jobs run inline, one after the other
        (fake_docker / "bin" / "mktemp").write_text("#!/bin/sh\nexit 1\n")
        (fake_docker / "bin" / "mktemp").chmod(0o755)
    f = gather_all(path)
    d = f.docker
    assert d.active and d.server_version == "26.1.5+dfsg1" and d.driver == "overlay2" and d.running_containers == 1
    assert d.images == {"busybox:latest": "sha256:bb"}
    assert [n.name for n in d.networks] == ["n1"]
    c = d.container("c1")
    assert c is not None and c.addresses["n1"].ipv4 == "198.18.61.2" and c.ports[0].host_port == 8080
    # every section asked for, and still five docker calls: the optional ones fetch nothing more from docker
    calls = (fake_docker / "calls").read_text().splitlines()
    assert len(calls) == 5 and calls[-1] == "inspect N1 C1"
    assert FIREWALL in f.sections
