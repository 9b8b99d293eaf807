"""The check matrices inside a verify message, read back from their text so they can be shown in other
layouts: a line per host when the grid is wider than the terminal, coloured grids in the HTML report
(when the JSON report has no structured ``verify`` data for the task).

The text is what the checks' ``Matrix.render`` writes::

    ov_net1: ping from (row) to (column)
            lab1    lab2    lab3
    lab1    -       ok      FAIL
    ...

and the failure lines of a failed check (``lab1 -> lab3 (10.0.0.3) over ov_net1: no reply``,
``lab2: probe did not start: ...``) give each failed cell its cause.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

HEADER = re.compile(r"^(\S+): (.*\(row\).*)$")
PAIR_FAILURE = re.compile(r"^\s*(\S+) -> (\S+) \(([^)]*)\) over (\S+): (.+)$")
START_FAILURE = re.compile(r"^\s*(\S+): probe did not start: (.+)$")
CELLS = ("-", "ok", "FAIL", "n/a", "isolated", "BROKEN", "ok?", "none?")
GOOD = ("ok", "isolated")  # as expected: reached, or no reply where isolation is wanted


@dataclass
class Grid:
    network: str  # what the matrix is over: a network (name@host for a host's own bridge) or a port
    hosts: list[str]
    cells: dict[tuple[str, str], str] = field(default_factory=dict)  # (from, to) -> ok | FAIL | n/a | -
    first_line: int = 0
    last_line: int = 0  # inclusive
    title: str = "ping from (row) to (column)"

    def width(self) -> int:
        col = max(6, *(len(h) for h in self.hosts)) + 2
        return col * (len(self.hosts) + 1)

    def per_host_lines(self) -> list[str]:
        """One line per source host: what it reached, and what it did not."""
        out = [f"{self.network}: {self.title.replace('(row)', 'each host').replace('(column)', 'the others')}"]
        for src in self.hosts:
            by: dict[str, list[str]] = {}
            for dst in self.hosts:
                if dst != src:
                    by.setdefault(self.cells.get((src, dst), "n/a"), []).append(dst)
            others = len(self.hosts) - 1
            if len(by) == 1 and next(iter(by)) in GOOD:
                out.append(f"  {src} -> all {others} others {next(iter(by))}")
                continue
            parts = [f"{k}: {', '.join(v)}" for k, v in by.items() if k not in GOOD]
            parts.extend(f"{k}: {len(by[k])} of {others}" for k in GOOD if k in by)
            out.append(f"  {src} -> {'; '.join(parts)}")
        return out


def parse(text: str) -> list[Grid]:
    """Every matrix found in ``text``, with the lines it spans."""
    lines = text.splitlines()
    grids: list[Grid] = []
    i = 0
    while i < len(lines):
        m = HEADER.match(lines[i].strip())
        if not m or i + 1 >= len(lines):
            i += 1
            continue
        hosts = lines[i + 1].split()
        grid = Grid(m.group(1), hosts, first_line=i, title=m.group(2))
        j = i + 2
        while j < len(lines) and len(grid.cells) < len(hosts) ** 2:
            row = lines[j].split()
            if len(row) != len(hosts) + 1 or row[0] not in hosts or any(c not in CELLS for c in row[1:]):
                break
            for dst, cell in zip(hosts, row[1:], strict=True):
                grid.cells[(row[0], dst)] = cell
            j += 1
        if hosts and grid.cells:
            grid.last_line = j - 1
            grids.append(grid)
        i = j
    return grids


def causes(text: str) -> dict[tuple[str, str, str], str]:
    """(network, from, to) -> why that cell failed; a probe that did not start explains its whole row
    and column (network "*": every network)."""
    out: dict[tuple[str, str, str], str] = {}
    for line in text.splitlines():
        m = PAIR_FAILURE.match(line)
        if m:
            src, dst, ip, net, why = m.groups()
            out[(net, src, dst)] = f"{src} -> {dst} ({ip}): {why}"
            continue
        s = START_FAILURE.match(line)
        if s:
            out[("*", s.group(1), "*")] = f"{s.group(1)}: probe did not start: {s.group(2)}"
    return out


def fit(text: str, width: int) -> str:
    """``text`` with every matrix wider than ``width`` columns rewritten as one line per host."""
    grids = [g for g in parse(text) if g.width() > width]
    if not grids:
        return text
    lines = text.splitlines()
    for g in reversed(grids):
        indent = lines[g.first_line][: len(lines[g.first_line]) - len(lines[g.first_line].lstrip())]
        new: list[str] = []
        for ln in g.per_host_lines():
            sub = "    " if ln.startswith("  ") else ""
            new.extend(textwrap.wrap(ln, max(20, width - len(indent)), subsequent_indent=sub, break_on_hyphens=False))
        lines[g.first_line : g.last_line + 1] = [indent + ln for ln in new]
    return "\n".join(lines)
