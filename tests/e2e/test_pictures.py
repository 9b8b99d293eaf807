"""Pictures, looked at: the HTML report and the topology SVG opened in headless Chromium.

Each page must load with no script error, no console error and no network request at all (the report is
read offline, as a CI artifact), must not be blank, and its rendered DOM must show every host, every
change and every failed matrix cell with its cause. One screenshot per page is kept as an artifact in
PROVISIONER_E2E_ARTIFACTS (default /var/tmp/provisioner-e2e-artifacts).

The lab part runs the README's main job on a 3-host bullseye lab (lab1 store, lab2/lab3 docker) with a
bridge network beside the overlay, a container with a published port, and then breaks VXLAN to lab3 so
the verify report has failed cells. Environment: PROVISIONER_E2E_PICTURES_LAB_DIR (default
/var/lib/provisioner/h19-pictures) and PROVISIONER_E2E_PICTURES_SUBNET (default 198.18.50.0/24).
"""

from __future__ import annotations

import html as html_text
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import PageVisit, chromium, visit
from tests.e2e.labkit import PLAYBOOK, cli, fresh_lab, lab_sh

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(chromium() is None, reason="chromium is not installed (bin/setup installs it)"),
]

STATE = Path(os.environ.get("PROVISIONER_E2E_PICTURES_LAB_DIR", "/var/lib/provisioner/h19-pictures"))
SUBNET = os.environ.get("PROVISIONER_E2E_PICTURES_SUBNET", "198.18.50.0/24")
ARTIFACTS = Path(os.environ.get("PROVISIONER_E2E_ARTIFACTS", "/var/tmp/provisioner-e2e-artifacts"))
# set to docs/pictures to regenerate the README's pictures (small: the top of each page, half size)
README_PICTURES = os.environ.get("PROVISIONER_README_PICTURES")

DOM = {
    "hosts": "[...document.querySelectorAll('tr[id^=host-]')].map(e => e.id.slice(5))",
    # every failed cell as [row host, column host, cause]
    "failed_cells": "[...document.querySelectorAll('td.FAIL')].map(td => [td.parentElement.firstElementChild"
    ".textContent, td.closest('table').rows[0].cells[td.cellIndex].textContent, td.title])",
    # a page's scroll size; an SVG document (no body) its drawing's size
    "height": "document.body ? document.documentElement.scrollHeight "
    ": Math.ceil(document.documentElement.getBoundingClientRect().height)",
    "width": "document.body ? document.documentElement.scrollWidth "
    ": Math.ceil(document.documentElement.getBoundingClientRect().width)",
}


def looked_at(page: Path, name: str, width: int = 1280) -> PageVisit:
    """Open ``page``; keep its screenshot; fail on anything a reader would trip over."""
    got = visit(page, width=width, expressions=DOM)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.write_bytes(got.screenshot)
    assert got.errors == [], f"{page}: script or console errors: {got.errors}"
    assert got.requests == [], f"{page}: the page made network requests: {got.requests}"
    assert len(got.text.strip()) > 100 and len(got.screenshot) > 10_000, f"{page} looks blank (see {shot})"
    if README_PICTURES:
        # the whole width of a drawing, the top of a report; half size
        wide, tall = int(got.dom["width"] or width), int(got.dom["height"] or 1000)
        small = visit(page, width=max(width, wide), small=(min(tall, 1000), 0.5))
        Path(README_PICTURES).mkdir(parents=True, exist_ok=True)
        (Path(README_PICTURES) / f"{name}.png").write_bytes(small.screenshot)
    return got


def test_sample_report_in_the_browser(tmp_path: Path) -> None:
    """No lab: the unit tests' sample report (a failed matrix, an unreachable host) with the topology."""
    from provisioner.html_report import render, topology_drawing
    from provisioner.inventory import load_inventory
    from tests.unit.test_graph import INVENTORY
    from tests.unit.test_html_report import report_json

    (tmp_path / "cluster.yml").write_text(INVENTORY)
    svg, dot = topology_drawing(load_inventory(tmp_path / "cluster.yml"))
    report = report_json(3)
    page = tmp_path / "report.html"
    page.write_text(render(report, title="cluster.yml", svg=svg, dot=dot))
    got = looked_at(page, "sample-report")
    assert sorted(got.dom["hosts"]) == sorted(report["hosts"])
    for h in report["hosts"].values():
        for t in h["tasks"]:
            for c in t["changes"]:
                assert c["description"] in got.text
    assert got.dom["failed_cells"] == [["lab2", "lab3", "lab2 -> lab3 (198.18.51.253): no reply"]]
    assert "lab2 -> lab3 (198.18.51.253): no reply" in got.text  # visible, not only on hover
    assert "gone: connection refused by 198.18.50.99:22" in got.text


# --- on the lab ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Path, str]]:
    with fresh_lab(STATE, SUBNET) as info:
        # our own copy: the overlay and a bridge in our address range, a quick failing matrix
        text = info.inventory_path.read_text()
        text = text.replace("198.19.1.0/24", "198.18.51.0/24").replace(
            "  ov_net1: {driver: overlay, subnet: 198.18.51.0/24}",
            "  ov_net1: {driver: overlay, subnet: 198.18.51.0/24}\n"
            "  net1: {driver: bridge, subnet: 198.18.52.0/24, gateway: 198.18.52.1}",
        )
        inv = STATE / "pictures.yml"
        inv.write_text(text + "  ping_count: 1\n  timeout: 3\n  retries: 0\n")
        yield inv, info.images["probe"]


def _report(res_stdout: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(res_stdout)
    return data


def test_apply_report_graph_and_a_broken_matrix(lab: tuple[Path, str], tmp_path: Path) -> None:
    inv, probe_image = lab
    html = tmp_path / "apply.html"
    res = cli("apply", "-i", str(inv), str(PLAYBOOK), "--output", "json", "--html", str(html))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = _report(res.stdout)
    got = looked_at(html, "apply-report")
    assert sorted(got.dom["hosts"]) == sorted(report["hosts"]) == ["lab1", "lab2", "lab3"]
    changes = [c["description"] for h in report["hosts"].values() for t in h["tasks"] for c in t["changes"]]
    assert len(changes) >= 5
    for desc in changes:
        assert desc in got.text, f"change {desc!r} not on the page"
    assert "docker.io 20.10.5" in got.text  # the engine of each host
    assert "all 2 hosts reach each other over ov_net1" in got.text

    # a container with a published port, then the cluster as the facts say
    lab_sh(STATE, "lab2", f"docker run -d --name web --network net1 -p 8080:80 {probe_image} sleep 900")
    lab_sh(STATE, "lab2", "docker network connect ov_net1 web")
    svg = tmp_path / "live.svg"
    res = cli("graph", "-i", str(inv), "--live", "-o", str(svg))
    assert res.returncode == 0, res.stderr
    drawn = html_text.unescape(svg.read_text())  # Graphviz writes "-" as &#45;
    for want in ("lab1", "lab2", "lab3", "ov_net1", "net1", "web", "-p *:8080 -> 80/tcp", "NAT out (MASQUERADE)"):
        assert want in drawn, f"{want!r} not in the live drawing"
    assert "UNREACHABLE" not in drawn and "MISSING" not in drawn
    got = looked_at(svg, "live-graph", width=1800)
    assert "lab3" in got.text

    # VXLAN to lab3 dropped: the verify report shows the failed cells, each with its cause
    lab_sh(STATE, "lab3", "iptables -I INPUT -p udp --dport 4789 -j DROP")
    try:
        html = tmp_path / "verify.html"
        res = cli("verify", "-i", str(inv), "--html", str(html))
        assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    finally:
        lab_sh(STATE, "lab3", "iptables -D INPUT -p udp --dport 4789 -j DROP")
    got = looked_at(html, "verify-report")
    cells = got.dom["failed_cells"]
    assert cells, "no failed cell on the page"
    # every failed pair involves lab3, each with its cause
    assert all("lab3" in (src, dst) and "no reply" in cause for src, dst, cause in cells), cells
    assert "FAIL" in got.text and "usual causes" in got.text
