"""The facts script's one `docker inspect` section holds networks and containers together."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from provisioner.facts import ADDRESSES, MARK, PORTS, facts_script, parse_facts


def test_mixed_inspect_section_is_split_into_networks_and_containers() -> None:
    inspect = [
        {"Name": "ov_net1", "Id": "n1", "Driver": "overlay", "Scope": "global",
         "IPAM": {"Config": [{"Subnet": "198.19.1.0/24"}]}, "Containers": {"x": {"Name": "prov-probe"}}},
        {"Name": "/consul", "Id": "c1", "Image": "sha256:aa", "Config": {"Image": "consul:1"},
         "State": {"Running": True, "Status": "running"}, "NetworkSettings": {"Networks": {"bridge": {}}}},
    ]  # fmt: skip
    out = f"\n{MARK} info\n{{}}\n{MARK} inspect\n{json.dumps(inspect)}\n"
    d = parse_facts("h", out).docker
    assert [n.name for n in d.networks] == ["ov_net1"] and d.networks[0].containers == ["prov-probe"]
    assert [c.name for c in d.containers] == ["consul"] and d.containers[0].running
    # addresses and ports are filled only when asked for (a bare endpoint: empty fields)
    assert d.containers[0].addresses == {}
    asked = parse_facts("h", out, sections=[ADDRESSES, PORTS]).docker.containers[0]
    assert list(asked.addresses) == ["bridge"] and asked.addresses["bridge"].ipv4 == "" and asked.ports == []


def test_script_runs_under_sh_when_docker_fails(tmp_path: Path) -> None:
    # a docker that always fails (daemon down): every Docker section is empty, the script still completes
    (tmp_path / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2; exit 1\n")
    (tmp_path / "docker").chmod(0o755)
    res = subprocess.run(
        ["sh", "-s"],
        input=facts_script([], {"p": "true"}, sections="all"),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        check=False,
    )
    facts = parse_facts("h", res.stdout, probes=["p"], sections="all")
    d = facts.docker
    assert d.networks == [] and d.containers == [] and d.images == {} and not d.active
    assert d.info_error is not None and "Cannot connect" in d.info_error
    assert d.driver == "" and d.security_options == []
    assert facts.probes == {"p": 0}
