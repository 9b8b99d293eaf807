"""Rendering a run: live progress lines, coloured diffs, the recap table, JSON and JUnit XML."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from provisioner.engine.results import RunReport, TaskResult, diff_kind, redact, unified_diff
from provisioner.modules.base import FLAGS

if TYPE_CHECKING:
    from provisioner.facts import HostFacts

_STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "skipped": "cyan", "unreachable": "bold red"}


class LiveEvents:
    """Prints one line per host and task as results arrive (thread safe)."""

    def __init__(self, console: Console, *, show_diff: bool, verbose: bool = False) -> None:
        self.console = console
        self.show_diff = show_diff
        self.verbose = verbose
        self._lock = threading.Lock()

    def play_start(self, play: str, hosts: Sequence[str]) -> None:
        with self._lock:
            self.console.rule(Text(f"PLAY {play}  [{', '.join(hosts) or 'no hosts'}]", style="bold"))

    def task_start(self, play: str, task: str, hosts: Sequence[str]) -> None:
        with self._lock:
            self.console.print(Text(f"TASK {task}", style="bold"))

    def host_result(self, result: TaskResult, check: bool) -> None:
        label = "would change" if check and result.status == "changed" else result.status
        with self._lock:
            line = Text("  ")
            line.append(f"{label:<12}", style=_STYLE.get(result.status, ""))
            line.append(f" {result.host}")
            if result.message and (result.status != "ok" or self.verbose or result.report):
                first, *rest = fit_matrices(result.message, self.console.width - 6).splitlines()
                line.append(f"  {first}", style="dim" if result.status in ("ok", "skipped") else "")
                for extra in rest:
                    line.append(f"\n      {extra}")
            self.console.print(line)
            for change in result.changes:
                self.console.print(Text(f"      - {redact(change.description, change.secrets)}"))
                if change.requires is not None and check:
                    flag = FLAGS.get(change.requires, change.requires)
                    what = "leaves this as it is without" if change.optional else "does this only with"
                    self.console.print(Text(f"          ! apply {what} {flag}", style="magenta"))
                for note in change.notes:
                    self.console.print(Text(f"          ! {redact(note, change.secrets)}", style="magenta"))
                if self.show_diff:
                    for cmd in change.commands:
                        self.console.print(Text(f"          $ {redact(cmd, change.secrets)}", style="dim"))
                    for step in change.rollback:
                        shown = redact(step.render(), change.secrets)
                        self.console.print(Text(f"          on failure: {shown}", style="dim"))
                    diff = unified_diff(change)
                    if diff:
                        self.console.print(render_diff(diff, indent="          "))

    def log(self, host: str, message: str) -> None:
        with self._lock:
            self.console.print(Text(f"    ... {host}: {message}", style="dim"))


_DIFF_STYLE = {"file": "bold", "add": "green", "del": "red", "hunk": "cyan", "": ""}


def render_diff(diff: str, indent: str = "") -> Text:
    out = Text()
    for line in diff.splitlines():
        out.append(indent + line + "\n", style=_DIFF_STYLE[diff_kind(line)])
    out.rstrip()
    return out


def recap(console: Console, report: RunReport) -> None:
    from provisioner.layout import Column, Rows, render

    rows = Rows(
        "RECAP" + (" (plan: nothing was changed)" if report.mode == "plan" else ""),
        [
            Column("host"),
            Column("ok", "right", "green"),
            Column("changed" if report.mode != "plan" else "would change", "right", "yellow"),
            Column("failed", "right", "red"),
            Column("skipped", "right", "cyan"),
            Column("unreachable", "right", "red"),
        ],
    )
    for name, h in report.hosts.items():
        rows.add(
            name,
            str(h.count("ok")),
            str(h.changed),
            str(h.failed),
            str(h.count("skipped")),
            "yes" if h.unreachable else "0",
        )
    console.print(render(console, rows))
    for name, h in report.hosts.items():
        if h.unreachable:
            console.print(Text(f"UNREACHABLE {h.unreachable_reason or name}", style="bold red"))
        for r in h.results:
            if r.status == "failed":
                message = fit_matrices(r.message, console.width)
                console.print(Text(f"FAILED {name} [{r.task}]: {message}", style="red"))
    if report.error:
        console.print(Text(f"STOPPED: {report.error}", style="bold red"))
    console.print(Text(f"{report.mode} finished in {report.duration:.2f}s", style="dim"))


def fit_matrices(message: str, width: int) -> str:
    """Check matrices wider than ``width`` shown as one line per host (a cut grid cannot be read)."""
    if "(row)" not in message:  # every matrix header names its rows so
        return message
    from provisioner.matrix_text import fit

    return fit(message, width)


def facts_table(console: Console, gathered: Mapping[str, HostFacts | str]) -> None:
    """What each host runs, as `provisioner facts` prints it: a table, or a block per host when the table
    is wider than the terminal (80 columns in a CI log)."""
    from provisioner.layout import Column, Rows, render

    names = ("os", "docker", "package", "state", "cluster store", "advertise", "swarm", "networks")
    rows = Rows("facts", [Column("host"), *(Column(n) for n in names)], note_label="unreachable")
    for h, f in gathered.items():
        if isinstance(f, str):
            rows.add(h, note=Text(f, style="red"))
            continue
        d = f.docker
        rows.add(
            h,
            f.os.pretty_name or f.os.id,
            d.server_version or "-",
            f"{d.package} {d.package_version}" if d.package else "-",
            d.state,
            d.cluster_store or "-",
            d.cluster_advertise or "-",
            d.swarm_state,
            ", ".join(n.name for n in d.networks if n.driver not in ("null", "host")) or "-",
        )
    console.print(render(console, rows))


def to_json(report: RunReport) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=False)


def write_junit(report: RunReport, path: Path) -> None:
    """JUnit XML: one test suite per host, one test case per task on that host."""
    suites = ET.Element("testsuites", name=f"provisioner {report.mode}")
    for name, h in report.hosts.items():
        failures = h.failed + (1 if h.unreachable else 0)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=name,
            tests=str(len(h.results) + (1 if h.unreachable else 0)),
            failures=str(failures),
            skipped=str(h.count("skipped")),
            time=f"{sum(r.duration for r in h.results):.3f}",
        )
        if h.unreachable:
            case = ET.SubElement(suite, "testcase", classname=name, name="connect")
            ET.SubElement(case, "failure", message="unreachable").text = h.unreachable_reason
        for r in h.results:
            case = ET.SubElement(suite, "testcase", classname=f"{name}.{r.play}", name=r.task, time=f"{r.duration:.3f}")
            if r.status == "failed":
                ET.SubElement(case, "failure", message=(r.message.splitlines() or ["failed"])[0]).text = r.message
            elif r.status == "skipped":
                ET.SubElement(case, "skipped", message=r.message)
            elif r.status == "changed":
                out = ET.SubElement(case, "system-out")
                out.text = "\n".join(redact(c.description, c.secrets) for c in r.changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
