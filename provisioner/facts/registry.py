"""Fact sections: each is a name, a shell fragment and a typed parser that fills its part of HostFacts.

The gatherer concatenates the fragments of the sections a run needs into ONE script per host (one
round trip). A fragment prints its section's body after a marker line; the parser reads that body (and
the bodies of the sections it names in ``reads``) and sets fields of ``HostFacts``. A section with no
fragment is parse-only: it reads what other sections already fetched (container addresses come from
the ``docker inspect`` that networks and containers share).

Slow commands run as background ``jobs`` started at the top of the script, all at once, while the
other sections run; the first fragment that needs a job's output waits for them. Without a writable
temp dir the jobs run one after the other, inline.

The script's first line is a comment holding a JSON header (sections, files, probes) so that a test
double can answer the script without reading its shell text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provisioner.connection.base import q
from provisioner.facts.model import HostFacts

MARK = "@@PROV@@"
PART = "@@PART@@"  # separates the parts of one section's body (see Output.parts)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Output:
    """The bodies of the gathered sections, with the options parsers need."""

    def __init__(self, texts: Mapping[str, str], *, dropin: str | None = None) -> None:
        self.texts = texts
        self.dropin = dropin  # our own systemd drop-in, ignored when reading the unit's base ExecStart
        self._json: dict[str, Any] = {}

    def text(self, name: str) -> str:
        return self.texts.get(name, "")

    def json(self, name: str) -> Any:
        """The body parsed as JSON (None when empty or not JSON); parsed once however many sections read it."""
        if name not in self._json:
            text = self.text(name)
            try:
                self._json[name] = json.loads(text) if text.strip() else None
            except json.JSONDecodeError:
                self._json[name] = None
        return self._json[name]

    def parts(self, name: str, marker: str = PART) -> dict[str, str]:
        """A body printed as ``@@PART@@ key`` lines, each followed by that part's text."""
        out: dict[str, str] = {}
        key: str | None = None
        for line in self.text(name).splitlines():
            if line.startswith(marker + " "):
                key = line[len(marker) + 1 :]
                out[key] = ""
            elif key is not None:
                out[key] += line + "\n"
        return out


Parser = Callable[[Output, HostFacts], None]


@dataclass(frozen=True)
class Section:
    name: str
    parse: Parser
    script: str = ""  # prints the body after the section's marker; "" = parse-only
    jobs: Mapping[str, str] = field(default_factory=dict)  # background commands: id -> command (see `job ID`)
    reads: tuple[str, ...] = ()  # other sections whose bodies parse() reads (gathered with this one)
    default: bool = True  # gathered on every run; otherwise only when a task asks for it


_REGISTRY: dict[str, Section] = {}


def section(
    name: str,
    script: str = "",
    *,
    jobs: Mapping[str, str] | None = None,
    reads: Iterable[str] = (),
    default: bool = True,
) -> Callable[[Parser], Parser]:
    """Register the decorated parser as section ``name``. A fragment reads a job's output with
    ``job ID``; ``$D`` is the docker CLI with a timeout. Sections a parser reads must be registered
    first (registration order is script order and parse order)."""

    def deco(parse: Parser) -> Parser:
        reads_ = tuple(reads)
        for n in (name, *(jobs or {})):
            if not _NAME.match(n):
                raise ValueError(f"fact section or job name {n!r}: use lowercase letters, digits and _")
        if name in _REGISTRY:
            raise ValueError(f"fact section {name!r} is registered twice")
        missing = [r for r in reads_ if r not in _REGISTRY]
        if missing:
            raise ValueError(f"fact section {name!r} reads {missing}, which must be registered before it")
        _REGISTRY[name] = Section(name, parse, script, dict(jobs or {}), reads_, default)
        return parse

    return deco


def registry() -> dict[str, Section]:
    return dict(_REGISTRY)


def default_sections() -> list[str]:
    return [s.name for s in _REGISTRY.values() if s.default]


def all_sections() -> list[str]:
    return list(_REGISTRY)


def resolve(wanted: Iterable[str]) -> list[Section]:
    """The default sections, the wanted ones and every section they read, in registration order."""
    todo = [*default_sections(), *wanted]
    names: set[str] = set()
    while todo:
        n = todo.pop()
        if n in names:
            continue
        if n not in _REGISTRY:
            raise ValueError(f"unknown fact section {n!r}; known: {', '.join(_REGISTRY)}")
        names.add(n)
        todo.extend(_REGISTRY[n].reads)
    return [s for s in _REGISTRY.values() if s.name in names]


def header(script: str) -> dict[str, Any]:
    """The JSON header of a facts script: {"sections": [...], "files": [...], "probes": {name: command}}."""
    first = script.split("\n", 1)[0]
    prefix = f"# {MARK} "
    if not first.startswith(prefix):
        raise ValueError("not a facts script (no header line)")
    data = json.loads(first[len(prefix) :])
    if not isinstance(data, dict):
        raise ValueError("facts script header is not a JSON object")
    return data


def build_script(sections: Sequence[Section], files: Sequence[str], probes: Mapping[str, str]) -> str:
    """The one facts script. Watched files and probes get numbered sections (``file:0``, ``probe:0``):
    paths and probe names never appear in marker lines, so nothing in them needs escaping there."""
    head = {"sections": [s.name for s in sections], "files": list(files), "probes": dict(probes)}
    lines = [
        f"# {MARK} {json.dumps(head, separators=(',', ':'))}",
        f"m={MARK}",
        'sec() { printf "\\n%s %s\\n" "$m" "$1"; }',
        "D='timeout 20 docker'",
    ]
    jobs: dict[str, str] = {}
    for s in sections:
        jobs.update(s.jobs)
    if jobs:
        # each job writes to a file in a temp dir, printed in one piece by `job ID` once all are done
        lines += [f"j_{i}() {{ {cmd}; }}" for i, cmd in jobs.items()]
        lines += [
            "T=$(mktemp -d 2>/dev/null) || T=",
            'if [ -n "$T" ]; then',
            "  trap 'rm -rf \"$T\"' EXIT",
            "  " + " ".join(f'j_{i} >"$T/{i}" &' for i in jobs),
            "fi",
            'job() { if [ -n "$T" ]; then cat "$T/$1"; else "j_$1"; fi; }',
        ]
    waited = False
    for s in sections:
        if not s.script:
            continue
        if s.jobs and not waited:
            lines.append('[ -z "$T" ] || wait')  # in the main shell: `wait` in a $(...) waits for nothing
            waited = True
        lines.append(f"sec {s.name}; {s.script}")
    for i, path in enumerate(files):
        lines.append(f"sec file:{i}; if [ -e {q(path)} ]; then stat -c '%a %U:%G' {q(path)}; base64 -w0 {q(path)}; fi")
    for i, cmd in enumerate(probes.values()):
        # the probe runs in a subshell with no stdin so it cannot eat the rest of this script
        lines.append(f"sec probe:{i}; ( {cmd} ) </dev/null >/dev/null 2>&1; echo $?")
    return "\n".join(lines) + "\n"


def split_sections(output: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name: str | None = None
    buf: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK + " "):
            if name is not None:
                out[name] = "\n".join(buf).strip("\n")
            name, buf = line[len(MARK) + 1 :], []
        elif name is not None:
            buf.append(line)
    if name is not None:
        out[name] = "\n".join(buf).strip("\n")
    return out
