"""`--html FILE`: one self-contained page from the run's report: nothing fetched, nothing secret, every
host and change on it, the verify grids with the cause of each failed cell, small."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioner.engine.results import RunReport, TaskResult
from provisioner.facts import DockerFacts, HostFacts, OSFacts
from provisioner.html_report import HostInfo, host_info, render
from provisioner.inventory import load_inventory
from provisioner.modules.base import Change

ROOT = Path(__file__).resolve().parents[2]

MATRIX = """overlay check failed:
    lab1: probe did not start: No such image: busybox:latest
    lab2 -> lab3 (198.18.51.253) over ov_net1: no reply
ov_net1: ping from (row) to (column)
        lab1    lab2    lab3
lab1    -       n/a     n/a
lab2    n/a     -       FAIL
lab3    n/a     ok      -
  usual causes:
    - UDP 4789 blocked between the hosts"""


def _task(
    task: str, status: str, duration: float, changes: list[dict[str, Any]] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "play": "overlay",
        "task": task,
        "module": kw.pop("module", "file"),
        "status": status,
        "changed": status == "changed",
        "message": kw.pop("message", ""),
        "duration": duration,
        "changes": changes or [],
    }


def _change(desc: str, diff: str = "", steps: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "description": desc,
        "path": None,
        "diff": diff,
        "commands": kw.get("commands", []),
        "notes": [],
    }
    if steps is not None:
        c["steps"] = steps
    return c


DIFF = (
    "--- /etc/systemd/system/docker.service.d/10-machine.conf (on host)\n"
    "+++ /etc/systemd/system/docker.service.d/10-machine.conf (wanted)\n"
    "@@ -1,2 +1,2 @@\n [Service]\n-ExecStart=/usr/sbin/dockerd <old>\n+ExecStart=/usr/sbin/dockerd --cluster-store=consul://x\n"
)


def report_json(hosts: int = 3) -> dict[str, Any]:
    names = [f"lab{i}" for i in range(1, hosts + 1)]
    out: dict[str, Any] = {
        "ok": False,
        "mode": "apply",
        "changed": 2,
        "failed": 1,
        "unreachable": 1,
        "error": "",
        "duration": 12.5,
        "connections": {},
        "hosts": {},
    }
    for i, name in enumerate(names):
        tasks = [
            _task("facts", "ok", 0.4),
            _task(
                "docker daemon",
                "changed",
                6.0 + i,
                [
                    _change(
                        f"write the drop-in on {name}", DIFF, steps=[f"put {name}:/etc/x", "systemctl restart docker"]
                    )
                ],
            ),
            _task(
                "networks",
                "changed",
                1.0,
                [_change(f"create network ov_net1 on {name}", commands=["docker network create x"])],
            ),
        ]
        if name == "lab2":
            tasks.append(_task("ping matrix", "failed", 4.0, module="overlay_verify", message=MATRIX))
        out["hosts"][name] = {
            "ok": name != "lab2",
            "changed": 2,
            "failed": int(name == "lab2"),
            "unreachable": False,
            "unreachable_reason": "",
            "ok_tasks": 1,
            "skipped": 0,
            "tasks": tasks,
        }
    out["hosts"]["gone"] = {
        "ok": False,
        "changed": 0,
        "failed": 0,
        "unreachable": True,
        "unreachable_reason": "gone: connection refused by 198.18.50.99:22",
        "ok_tasks": 0,
        "skipped": 0,
        "tasks": [],
    }
    return out


FETCHING = re.compile(r"<script|<link|<img|<iframe|@import|url\(|src=|href=\"?https?:|https?://", re.I)


def test_page_is_self_contained_and_complete() -> None:
    page = render(report_json(), title="lab.yml", hosts={"lab1": HostInfo("docker.io 20.10.5+dfsg1", "kv")})
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not FETCHING.search(page), FETCHING.search(page)
    for host in ("lab1", "lab2", "lab3", "gone"):
        assert f'id="host-{host}"' in page
    for host in ("lab1", "lab2", "lab3"):
        assert f"write the drop-in on {host}" in page and f"create network ov_net1 on {host}" in page
        assert f"put {host}:/etc/x" in page  # the change's steps, when the report has them
    assert "docker network create x" in page  # ... else its commands
    assert "gone: connection refused by 198.18.50.99:22" in page
    assert "docker.io 20.10.5+dfsg1" in page
    # the diff is escaped and coloured per line
    assert '<span class="d">-ExecStart=/usr/sbin/dockerd &lt;old&gt;</span>' in page
    assert "<old>" not in page


def test_verify_grid_has_a_cause_in_every_failed_cell() -> None:
    page = render(report_json())
    assert 'class="grid"' in page
    fail = re.findall(r'<td class="FAIL" title="([^"]*)">', page)
    assert fail == ["lab2 -&gt; lab3 (198.18.51.253): no reply"]
    na = re.findall(r'<td class="na" title="([^"]*)">', page)
    assert na and all(c == "lab1: probe did not start: No such image: busybox:latest" for c in na)


def test_secrets_stay_masked() -> None:
    secret = "s3cr3t-passw0rd"
    report = RunReport(mode="plan")
    change = Change(
        description=f"write /etc/app.conf with password {secret}",
        path="/etc/app.conf",
        before="password=old\n",
        after=f"password={secret}\n",
        secrets=(secret,),
    )
    report.host("lab1").results.append(TaskResult("p", "conf", "file", "lab1", "changed", changes=[change]))
    page = render(report.to_json())
    assert secret not in page
    assert "write /etc/app.conf with password ***" in page and "+password=***" in page


def test_twenty_hosts_under_a_megabyte(tmp_path: Path) -> None:
    from provisioner.html_report import topology_drawing

    hosts = "\n".join(f"  lab{i}: {{address: 198.18.50.{i + 10}, groups: [docker]}}" for i in range(1, 21))
    inv_path = tmp_path / "twenty.yml"
    inv_path.write_text(
        "connection: {host_key_policy: accept-new, known_hosts: kh}\n"
        f"hosts:\n  kv1: {{address: 198.18.50.2}}\n{hosts}\n"
        "kv_store: {backend: etcd, hosts: [kv1]}\n"
        "networks:\n  ov_net1: {subnet: 198.18.51.0/24}\n  net1: {driver: bridge, subnet: 198.18.52.0/24}\n"
    )
    svg, dot = topology_drawing(load_inventory(inv_path))
    page = render(report_json(20), svg=svg, dot=dot)
    size = len(page.encode())
    assert size < 1_000_000, f"{size} bytes for 20 hosts"
    assert all(f'id="host-lab{i}"' in page for i in range(1, 21))
    assert not FETCHING.search(
        page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    )


def test_host_info_names_engine_and_mode(tmp_path: Path) -> None:
    inv_path = tmp_path / "i.yml"
    inv_path.write_text(
        "connection: {host_key_policy: accept-new, known_hosts: kh}\n"
        "hosts:\n  kv1: {address: 198.18.50.2}\n  lab1: {address: 198.18.50.11, groups: [docker]}\n"
        "kv_store: {backend: etcd, hosts: [kv1]}\nnetworks:\n  ov_net1: {subnet: 198.18.51.0/24}\n"
    )
    d = DockerFacts(
        installed=True,
        active=True,
        server_version="20.10.24+dfsg1",
        package="docker.io",
        package_version="20.10.24+dfsg1-1+b3",
        cluster_store="etcd://198.18.50.2:2379",
    )
    facts = {
        "lab1": HostFacts(host="lab1", os=OSFacts(pretty_name="Debian GNU/Linux 12 (bookworm)"), docker=d),
        "kv1": HostFacts(host="kv1", docker=DockerFacts(installed=True, server_version="20.10.24+dfsg1")),
    }
    info = host_info(load_inventory(inv_path), facts)
    assert info["lab1"] == HostInfo(
        "docker.io 20.10.24+dfsg1-1+b3", "kv (etcd://198.18.50.2:2379)", "Debian GNU/Linux 12 (bookworm)"
    )
    assert info["kv1"].mode == "store host"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )


@pytest.fixture
def unreachable_inventory(tmp_path: Path) -> Path:
    # port 1 on loopback refuses at once: every host is unreachable
    path = tmp_path / "inv.yml"
    path.write_text(
        "connection: {host_key_policy: accept-new, known_hosts: kh, port: 1, connect_timeout: 1, retries: 0}\n"
        "hosts:\n  kv1: {address: 127.0.50.2}\n  lab1: {address: 127.0.50.11, groups: [docker]}\n"
        "kv_store: {backend: etcd, hosts: [kv1]}\nnetworks:\n  ov_net1: {subnet: 198.18.51.0/24}\n"
    )
    return path


def test_cli_plan_html_with_unreachable_hosts(unreachable_inventory: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = _cli("plan", "-i", str(unreachable_inventory), str(ROOT / "playbooks" / "overlay.yml"), "--html", str(out))
    assert res.returncode == 1, res.stderr
    page = out.read_text()
    assert "provisioner plan: FAILED" in page and "connection refused by 127.0.50.11:1" in page
    assert 'id="host-kv1"' in page and 'id="host-lab1"' in page and "Topology" in page


def test_cli_html_bad_path_is_refused_before_contacting(unreachable_inventory: Path, tmp_path: Path) -> None:
    res = _cli("verify", "-i", str(unreachable_inventory), "--html", str(tmp_path / "no" / "r.html"))
    assert res.returncode == 2 and "does not exist" in res.stderr and "fix:" in res.stderr
    assert "Traceback" not in res.stderr and "refused" not in res.stderr


def _pair(src: str, dst: str, expected: str, observed: str, verdict: str, cause: str | None = None) -> dict[str, Any]:
    return {
        "kind": "ping",
        "source": src,
        "destination": dst,
        "network": "net1",
        "network_host": "lab2",
        "port": None,
        "address": "198.18.52.3",
        "expected": expected,
        "why": "",
        "observed": observed,
        "verdict": verdict,
        "cause": cause,
    }


def test_verify_data_gives_the_grid_and_each_cause() -> None:
    """The JSON report's structured `verify` (every pair with expectation, observation, verdict, cause)
    is drawn as it is: reach and isolation, failures with their cause in the cell."""
    report = report_json(1)
    data = {
        "ok": False,
        "pairs": [
            _pair("a", "b", "reach", "reached", "ok"),
            _pair("b", "a", "reach", "no reply", "no reply", "no reply from 198.18.52.3 over net1@lab2"),
            _pair("a", "c", "isolated", "no reply", "ok"),
            _pair("c", "a", "isolated", "reached", "isolation broken", "c reached 198.18.52.3 over net1@lab2"),
        ],
        "probes_not_started": {"prov-probe-x": "No such image: busybox"},
    }
    report["hosts"]["lab1"]["tasks"].append(
        _task("container checks", "failed", 2.0, module="container_verify", message="checks failed") | {"verify": data}
    )
    page = render(report)
    assert "net1@lab2: ping from (row) to (column)" in page
    cells = re.findall(r'<td class="(\w+)"(?: title="([^"]*)")?>(\w+|[?\w]+)', page)
    assert ("FAIL", "no reply from 198.18.52.3 over net1@lab2", "FAIL") in cells
    assert ("FAIL", "c reached 198.18.52.3 over net1@lab2", "BROKEN") in cells
    assert ("iso", "", "isolated") in cells and ("ok", "", "ok") in cells
    assert "prov-probe-x: No such image: busybox" in page


def test_the_timeline_places_each_task_where_it_started() -> None:
    from provisioner.html_report import _timeline

    tasks = [
        {"task": "facts", "status": "ok", "duration": 1.0, "started": 0.0},
        {"task": "restart", "status": "changed", "duration": 2.0, "started": 5.0},  # waited 4 s (rolling)
    ]
    html = _timeline(tasks, 10.0)
    assert '<span class="gap" style="width:40.00%"></span>' in html  # the 4 s the host waited
    assert html.index(">facts<") < html.index('class="gap"') < html.index(">restart<")
