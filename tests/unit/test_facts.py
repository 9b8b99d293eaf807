"""Facts: the gatherer script runs in a real shell; the parser turns sections into HostFacts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from provisioner.connection.base import RunResult
from provisioner.connection.fake import FakeConnection
from provisioner.facts import (
    ADDRESSES,
    ENGINE,
    FIREWALL,
    MARK,
    PORTS,
    all_sections,
    default_sections,
    facts_script,
    gather,
    header,
    parse_execstart,
    parse_facts,
)


def _local_shell(cmd: str, stdin: bytes | None) -> RunResult:
    p = subprocess.run(["sh", "-c", cmd], input=stdin, capture_output=True, timeout=60, check=False)
    return RunResult(p.returncode, p.stdout.decode(), p.stderr.decode())


def test_gather_runs_one_round_trip_in_a_real_shell(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_text("hello\n")
    f.chmod(0o640)
    conn = FakeConnection("local").on(r"^sh -s$", respond=_local_shell)
    facts = gather(conn, files=[str(f), str(tmp_path / "missing")], probes={"yes": "true", "no": "false"})
    assert conn.stats.round_trips == 1
    assert facts.file(str(f)).exists and facts.file(str(f)).content == "hello\n"
    assert facts.file(str(f)).mode == "640"
    assert not facts.file(str(tmp_path / "missing")).exists
    assert facts.probes == {"yes": 0, "no": 1}
    weird = tmp_path / "a;b $(x)"
    weird.write_text("x")
    assert gather(conn, files=[str(weird)]).file(str(weird)).content == "x"
    assert facts.os.id  # /etc/os-release exists on the test machine
    assert "lo" in facts.interfaces and "127.0.0.1" in facts.interfaces["lo"].addresses


def _doc(sections: dict[str, str]) -> str:
    return "".join(f"\n{MARK} {k}\n{v}\n" for k, v in sections.items())


DOCKER_INFO = {
    "ServerVersion": "20.10.5+dfsg1",
    "ClusterStore": "consul://198.18.0.11:8500",
    "ClusterAdvertise": "198.18.0.12:2376",
    "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "ControlAvailable": False},
    "LiveRestoreEnabled": False,
    "ContainersRunning": 2,
}


def test_parse_docker_sections() -> None:
    out = _doc(
        {
            "os": 'ID=debian\nVERSION_ID="11"\nVERSION_CODENAME=bullseye',
            "user": "0\nroot",
            "init": "systemd",
            "ip": json.dumps(
                [
                    {
                        "ifname": "eth0",
                        "flags": ["UP"],
                        "mtu": 1500,
                        "addr_info": [{"family": "inet", "local": "198.18.0.12", "prefixlen": 24}],
                    }
                ]
            ),
            "dockerd": "/usr/sbin/dockerd",
            "package": "docker.io 20.10.5+dfsg1-1+deb11u2",
            "active": "active",
            "unit": "/lib/systemd/system/docker.service\n/etc/systemd/system/docker.service.d/10-machine.conf",
            "unitfiles": "@@FILE@@ /lib/systemd/system/docker.service\n[Service]\n"
            "ExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS\n"
            "@@FILE@@ /etc/systemd/system/docker.service.d/10-machine.conf\n[Service]\nExecStart=\n"
            "ExecStart=/usr/sbin/dockerd -H fd:// --cluster-store=consul://x:1\n",
            "info": json.dumps(DOCKER_INFO),
            # networks and containers come from one `docker inspect`
            "inspect": json.dumps(
                [
                    {
                        "Name": "ov_net1",
                        "Driver": "overlay",
                        "Scope": "global",
                        "Attachable": True,
                        "IPAM": {"Config": [{"Subnet": "198.19.1.0/24", "Gateway": "198.19.1.1"}]},
                        "Containers": {"abc": {"Name": "probe"}},
                    },
                    {
                        "Name": "/consul",
                        "Id": "c1",
                        "Image": "sha256:aa",
                        "Config": {"Image": "consul:1", "Labels": {}},
                        "State": {"Running": True, "Status": "running"},
                        "Args": ["agent"],
                    },
                ]
            ),
            "images": "consul:1 sha256:aa\n<none>:<none> sha256:bb",
        }
    )
    f = parse_facts("h", out, dropin="/etc/systemd/system/docker.service.d/10-machine.conf")
    assert f.os.codename == "bullseye" and f.uid == 0 and f.init == "systemd"
    assert f.address_of("eth0") == "198.18.0.12" and f.address_of("nope") is None
    d = f.docker
    assert d.active and d.server_version == "20.10.5+dfsg1" and d.package_version == "20.10.5+dfsg1-1+deb11u2"
    assert d.cluster_store == "consul://198.18.0.11:8500" and d.running_containers == 2
    # our own drop-in is ignored: the base command line is the vendor unit's
    assert d.base_execstart == ["/usr/sbin/dockerd", "-H", "fd://", "$DOCKER_OPTS"]
    net = d.network("ov_net1")
    assert net is not None and net.subnets == ["198.19.1.0/24"] and net.containers == ["probe"]
    c = d.container("consul")
    assert c is not None and c.running and c.image == "consul:1"
    assert d.images == {"consul:1": "sha256:aa"}


def test_docker_down_is_a_fact_not_an_error() -> None:
    f = parse_facts("h", _doc({"active": "failed", "info": "Cannot connect to the Docker daemon"}))
    assert not f.docker.active and f.docker.state == "failed"
    assert f.docker.info_error is not None and "Cannot connect" in f.docker.info_error


def test_execstart_reset_and_continuations() -> None:
    files = {
        "/lib/unit": "[Service]\nExecStart=/usr/bin/dockerd \\\n  -H fd://\n",
        "/etc/other.conf": "[Service]\nExecStart=\nExecStart=-/usr/bin/dockerd --debug\n",
    }
    assert parse_execstart(files, ignore=None) == ["/usr/bin/dockerd", "--debug"]
    assert parse_execstart(files, ignore="/etc/other.conf") == ["/usr/bin/dockerd", "-H", "fd://"]
    assert parse_execstart({"/u": "[Unit]\nExecStart=/not/service\n"}, ignore=None) is None


def test_default_script_keeps_five_docker_calls_four_of_them_at_once() -> None:
    script = facts_script()
    assert header(script)["sections"] == default_sections()
    assert script.count("$D ") == 5  # info, images, network ls, ps and the one inspect they share
    assert 'j_info >"$T/info" & j_images >"$T/images" & j_nets >"$T/nets" & j_ps >"$T/ps" &' in script
    assert "iptables-save" not in script and "ip_forward" not in script


def test_only_requested_sections_appear_in_the_script() -> None:
    default = facts_script()
    fw = facts_script(sections=[FIREWALL])
    assert header(fw)["sections"] == [*default_sections(), FIREWALL]
    assert "\nsec firewall; " in fw and "iptables-save" in fw and fw.count("$D ") == 5
    assert "\nsec firewall; " not in default
    # parse-only sections read the docker output already fetched: the same shell, a longer header
    parse_only = facts_script(sections=[ADDRESSES, PORTS, ENGINE])
    assert parse_only.split("\n", 1)[1] == default.split("\n", 1)[1]
    assert header(parse_only)["sections"] == [*default_sections(), ADDRESSES, PORTS, ENGINE]
    # a section another one reads comes with it, and every marker the script prints is in its header
    for script in (default, fw, parse_only, facts_script(sections="all")):
        assert set(re.findall(r"^sec (\S+);", script, re.M)) <= set(header(script)["sections"])
    assert set(header(facts_script(sections="all"))["sections"]) == set(all_sections())


def test_unknown_section_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fact section 'nope'"):
        facts_script(sections=["nope"])


def test_header_is_one_inert_line_with_files_and_probes() -> None:
    files = ["/a b", "/x\ntouch INJECTED", "/$(id)"]
    probes = {"p;1": "test -e '/x y'", "q": "echo '\n' >/dev/null"}
    script = facts_script(files, probes)
    first = script.split("\n", 1)[0]
    assert first.startswith("# @@PROV@@ {")
    assert header(script) == {"sections": default_sections(), "files": files, "probes": probes}


def test_parse_records_what_was_gathered() -> None:
    f = parse_facts("h", "", sections=[PORTS])
    assert f.gathered(PORTS) and f.gathered("inspect") and not f.gathered(FIREWALL)
    # nothing printed: every fact at its default, no exception
    assert f.docker.containers == [] and not f.docker.active and f.os.id == ""


@pytest.mark.parametrize(
    "body", ["garbage {[", '{"a": 1}', "[1, null, []]", '"x"', "@@PART@@ rules\n*nat\n-A POSTROUTING"]
)
def test_every_section_survives_odd_output(body: str) -> None:
    out = _doc({name: body for name in all_sections()})
    f = parse_facts("h", out, sections="all")
    assert f.sections == all_sections() and not f.docker.active and f.docker.containers == []
