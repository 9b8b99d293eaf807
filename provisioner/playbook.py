"""Playbooks: an Ansible-like list of plays, each running tasks (one module each) on some hosts.

``load_playbook(path, inventory)`` validates the file against the inventory (host patterns) and the
module registry (each task's arguments are validated by its module's own ``Args`` model) and returns a
frozen :class:`Playbook`, or raises :class:`~provisioner.errors.InputError` listing every problem with
file:line:col, field and fix.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
)

from provisioner.errors import InputError, Problem
from provisioner.inventory import KV_GROUP, Inventory
from provisioner.modules.base import Module, ModuleArgs
from provisioner.when import Condition, parse
from provisioner.yamlsrc import YamlDoc, describe_type, invalid, load_yaml, problems_from_validation, require_type

TASK_KEYS = ("name", "notify", "run_once", "when")
_SECRETISH = ("password", "passphrase", "secret", "token", "content")

ModuleRegistry = Mapping[str, type[Module[Any]]]


class Task(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    module: str
    args: SerializeAsAny[ModuleArgs]
    notify: list[str] = Field(default_factory=list)
    run_once: bool = False
    when: str | None = None
    line: int = 0

    def condition(self) -> Condition | None:
        """The parsed ``when`` (validated at load time, so this does not fail for loaded playbooks)."""
        return parse(self.when) if self.when is not None else None


class Play(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    hosts: list[str]  # resolved host names, inventory order
    pattern: str | list[str]  # as written
    serial: int | str | None = None  # int >= 1 or "NN%"
    tasks: list[Task] = Field(default_factory=list)
    handlers: list[Task] = Field(default_factory=list)
    any_errors_fatal: bool = False
    max_fail_percentage: float | None = None
    line: int = 0

    def batches(self, hosts: list[str] | None = None) -> list[list[str]]:
        """``hosts`` (default: the play's) split into the batches ``serial`` asks for."""
        todo = list(self.hosts if hosts is None else hosts)
        if not todo:
            return []
        if self.serial is None:
            return [todo]
        if isinstance(self.serial, str):
            size = max(1, math.floor(len(todo) * float(self.serial[:-1]) / 100))
        else:
            size = self.serial
        return [todo[i : i + size] for i in range(0, len(todo), size)]


class Playbook(BaseModel):
    model_config = ConfigDict(frozen=True)

    plays: list[Play]
    source: Path


# ---------------------------------------------------------------------------------------------------
# raw shapes of the YAML, validated before the semantic checks


def _pattern(v: Any) -> str | list[str]:
    if isinstance(v, str) and v.strip():
        return v.strip()
    if isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v):
        return [x.strip() for x in v]
    raise invalid(f"hosts must be a host/group name, 'all', or a list of them; got {v!r}",
                  "write e.g. 'hosts: all', 'hosts: docker' or 'hosts: [host1, host2]'")


_SERIAL_FIX = "write e.g. serial: 1 or serial: '50%'"


def _serial(v: Any) -> int | str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise invalid(f"serial must be a number of hosts or a percentage, got {v!r}", _SERIAL_FIX)
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v.strip())
    if isinstance(v, int):
        if v < 1:
            raise invalid(f"serial {v} would run no host at a time",
                          "use 1 or more (hosts per batch), or remove serial")
        return v
    if isinstance(v, str) and v.strip().endswith("%"):
        num = v.strip()[:-1].strip()
        try:
            pct = float(num)
        except ValueError:
            pct = math.nan
        if not 0 < pct <= 100:
            raise invalid(f"serial {v!r} is not a percentage between 1% and 100%",
                          "use e.g. '25%' (each batch gets at least one host), or a host count like 2")
        return f"{num}%"
    raise invalid(f"serial must be a number of hosts or a percentage, got {v!r}", _SERIAL_FIX)


def _none_is_empty(v: Any) -> Any:
    return [] if v is None else v


def _notify(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str) and v.strip():
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v):
        return list(v)
    raise invalid(f"notify must be a handler name or a list of them, got {v!r}", "write e.g. notify: restart docker")


class _RawPlay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    hosts: Annotated[str | list[str], PlainValidator(_pattern)]
    serial: Annotated[int | str | None, PlainValidator(_serial)] = None
    tasks: Annotated[list[Any], BeforeValidator(_none_is_empty)] = Field(default_factory=list)
    handlers: Annotated[list[Any], BeforeValidator(_none_is_empty)] = Field(default_factory=list)
    any_errors_fatal: bool = False
    max_fail_percentage: float | None = Field(default=None, ge=0, le=100)


class _RawTaskMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    notify: Annotated[list[str], PlainValidator(_notify)] = Field(default_factory=list)
    run_once: bool = False
    when: str | None = None


# ---------------------------------------------------------------------------------------------------
# loading


def load_playbook(path: Path | str, inventory: Inventory, modules: ModuleRegistry | None = None) -> Playbook:
    """Load and validate a playbook; raises InputError with every problem found.

    ``modules`` defaults to the built-in registry (``provisioner.modules.base.registry()``).
    """
    if modules is None:
        from provisioner.modules.base import registry

        modules = registry()
    doc = load_yaml(path, "playbook")
    require_type(doc, list, "playbook", "a list of plays: '- name: ...' / '  hosts: all' / '  tasks: [...]'")
    loader = _Loader(doc, inventory, modules)
    plays = loader.plays()
    if loader.problems:
        loader.problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise InputError(loader.problems)
    return Playbook(plays=plays, source=doc.path)


class _Loader:
    def __init__(self, doc: YamlDoc, inventory: Inventory, modules: ModuleRegistry) -> None:
        self.doc = doc
        self.inventory = inventory
        self.modules = modules
        self.problems: list[Problem] = []
        self.context = {"base_dir": doc.path.resolve().parent, "inventory": inventory, "source": doc.path}

    def add(self, path: tuple[str | int, ...], message: str, fix: str, on_key: bool = False) -> None:
        self.problems.append(self.doc.problem(path, message, fix, "key" if on_key else "value"))

    def line(self, path: tuple[str | int, ...]) -> int:
        return self.doc.where(path, "key")[0] or 0

    def plays(self) -> list[Play]:
        data: list[Any] = self.doc.data
        if not data:
            self.add((), "the playbook has no plays", "add a play: '- hosts: all' with 'tasks:' below it")
        out = []
        for i, raw in enumerate(data):
            play = self.play(i, raw)
            if play is not None:
                out.append(play)
        return out

    def play(self, i: int, raw: Any) -> Play | None:
        where: tuple[str | int, ...] = (i,)
        if not isinstance(raw, dict):
            self.add(where, f"a play must be a mapping, got {describe_type(raw)} {raw!r}",
                     "write a play as '- hosts: ...' with 'name:', 'tasks:' etc. indented under it")
            return None
        try:
            rp = _RawPlay.model_validate(raw)
        except ValidationError as exc:
            self.problems.extend(problems_from_validation(self.doc, exc, _RawPlay, where))
            return None

        hosts = self.resolve(where, rp.hosts)
        handlers = self.tasks(where, "handlers", rp.handlers)
        names = [h.name for h in handlers]
        for j, h in enumerate(handlers):
            if names.count(h.name) > 1 and names.index(h.name) != j:
                self.add((*where, "handlers", j), f"handler name '{h.name}' is used twice in this play",
                         "give every handler its own name (tasks notify handlers by name)")
            if h.notify:
                self.add((*where, "handlers", j, "notify"), "a handler cannot notify other handlers",
                         "move that work into this handler, or notify both handlers from the task")
        tasks = self.tasks(where, "tasks", rp.tasks, handler_names=names)
        if hosts is None:
            return None
        pattern_text = rp.hosts if isinstance(rp.hosts, str) else ", ".join(rp.hosts)
        return Play(
            name=rp.name or pattern_text,
            hosts=hosts,
            pattern=rp.hosts,
            serial=rp.serial,
            tasks=tasks,
            handlers=handlers,
            any_errors_fatal=rp.any_errors_fatal,
            max_fail_percentage=rp.max_fail_percentage,
            line=self.line(where),
        )

    def resolve(self, where: tuple[str | int, ...], pattern: str | list[str]) -> list[str] | None:
        inv = self.inventory
        known = f"hosts: {', '.join(inv.hosts)}; groups: {', '.join(inv.groups())}"
        try:
            hosts = inv.resolve_pattern(pattern)
        except ValueError as exc:
            self.add((*where, "hosts"), str(exc), "use 'all', a group or host names from the inventory")
            return None
        items = pattern if isinstance(pattern, list) else [pattern]
        parts = [p.strip() for item in items for p in str(item).split(",")]
        names = {p for p in parts if p and not p.startswith("!")}
        if not hosts and names == {KV_GROUP} and inv.kv_store is None:
            return []  # the store's play of a job, in an inventory without a store: nothing to do there
        if not hosts:
            self.add((*where, "hosts"), f"host pattern {pattern!r} matches no host in the inventory",
                     f"use 'all', a group or host names from the inventory ({known})")
            return None
        return hosts

    def tasks(
        self,
        play: tuple[str | int, ...],
        section: str,
        raws: list[Any],
        handler_names: list[str] | None = None,
    ) -> list[Task]:
        out = []
        for j, raw in enumerate(raws):
            task = self.task((*play, section, j), raw, handler_names)
            if task is not None:
                out.append(task)
        return out

    def task(self, where: tuple[str | int, ...], raw: Any, handler_names: list[str] | None) -> Task | None:
        if not isinstance(raw, dict):
            fix = "write a task as '- name: ...' with one module key, e.g. '- command: {cmd: ...}'"
            if isinstance(raw, str) and raw in self.modules:
                fix = f"a module needs a colon after its name: write '- {raw}:' (with its arguments below it)"
            self.add(where, f"a task must be a mapping, got {describe_type(raw)} {raw!r}", fix)
            return None
        module = self.module_key(where, raw)
        meta_raw = {k: v for k, v in raw.items() if k in TASK_KEYS}
        try:
            meta = _RawTaskMeta.model_validate(meta_raw)
        except ValidationError as exc:
            self.problems.extend(problems_from_validation(self.doc, exc, _RawTaskMeta, where, meta_raw))
            meta = None
        if meta is not None and meta.when is not None:
            try:
                parse(meta.when)
            except ValueError as exc:
                self.add((*where, "when"), f"invalid condition: {exc}",
                         "conditions look like: docker.active, not docker.active, "
                         "docker.server_version >= \"20.10\", os.id in [\"debian\", \"ubuntu\"]")
                meta = None
        if meta is not None and handler_names is not None:
            for n, name in enumerate(meta.notify):
                if name not in handler_names:
                    at = (*where, "notify", n) if isinstance(raw.get("notify"), list) else (*where, "notify")
                    close = difflib.get_close_matches(name, handler_names, n=1)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    have = ", ".join(repr(h) for h in handler_names) or "none"
                    self.add(at, f"notify names unknown handler '{name}'",
                             f"{hint}handlers of this play: {have} (matched by their 'name')")
        if module is None:
            return None
        args = self.module_args(where, module, raw[module])
        if args is None or meta is None:
            return None
        return Task(
            name=meta.name or _default_name(module, raw[module]),
            module=module,
            args=args,
            notify=meta.notify,
            run_once=meta.run_once,
            when=meta.when,
            line=self.line(where),
        )

    def module_key(self, where: tuple[str | int, ...], raw: dict[str, Any]) -> str | None:
        others = [k for k in raw if k not in TASK_KEYS]
        found = [k for k in others if k in self.modules]
        unknown = [k for k in others if k not in self.modules]
        known = sorted(self.modules)
        for key in unknown:
            near_kw = difflib.get_close_matches(str(key), TASK_KEYS, n=1, cutoff=0.75)
            near_mod = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            if near_kw and (found or not near_mod):
                self.add((*where, key), f"unknown task key '{key}'",
                         f"did you mean '{near_kw[0]}'? (task keys: {', '.join(TASK_KEYS)}, plus one module)",
                         on_key=True)
            elif found:
                self.add((*where, key), f"unknown task key '{key}' (this task already uses module '{found[0]}')",
                         f"a task takes one module plus {', '.join(TASK_KEYS)}; "
                         f"remove '{key}' or move it to its own task",
                         on_key=True)
            else:
                hint = f"did you mean '{near_mod[0]}'? " if near_mod else ""
                self.add((*where, key), f"unknown module '{key}'", f"{hint}known modules: {', '.join(known)}",
                         on_key=True)
        if len(found) > 1:
            self.add((*where, found[1]), f"one task uses two modules: {', '.join(repr(m) for m in found)}",
                     "split it into one task per module", on_key=True)
            return None
        if not found:
            if not unknown:
                self.add(where, "task has no module",
                         "add one module with its arguments, e.g. 'command: {cmd: ...}' "
                         f"(known modules: {', '.join(known)})")
            return None
        return found[0] if not unknown else None

    def module_args(self, where: tuple[str | int, ...], module: str, value: Any) -> ModuleArgs | None:
        cls = self.modules[module]
        at = (*where, module)
        if value is None:
            value = {}
        if isinstance(value, str):
            free_form = getattr(cls, "free_form", None)
            if isinstance(free_form, str):
                value = {free_form: value}
            else:
                fields = [n for n, f in cls.Args.model_fields.items() if f.is_required()] or list(cls.Args.model_fields)
                self.add(at, f"arguments of module '{module}' must be a mapping, got text {value!r}",
                         f"write them as 'key: value' lines indented under '{module}:' "
                         f"({'required' if any(f.is_required() for f in cls.Args.model_fields.values()) else 'keys'}: "
                         f"{', '.join(fields)})")
                return None
        if not isinstance(value, dict):
            self.add(at, f"arguments of module '{module}' must be a mapping, got {type(value).__name__}",
                     f"write them as 'key: value' lines indented under '{module}:'")
            return None
        templated = _templated(value)
        if templated:
            for path in templated:
                self.add((*at, *path), "templating ('{{ ... }}') is not supported in module arguments",
                         "write the value literally; inventory data is available to modules directly")
            return None
        try:
            return cls.Args.model_validate(value, context=self.context)
        except ValidationError as exc:
            self.problems.extend(problems_from_validation(self.doc, exc, cls.Args, at, value))
            return None


def _templated(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(value, str):
        return [path] if "{{" in value and "}}" in value else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _templated(v, (*path, str(k)))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _templated(v, (*path, i))]
    return []


def _default_name(module: str, args: Any) -> str:
    """"<module> <short args summary>", e.g. "file path=/etc/motd mode=0644"."""
    if isinstance(args, str):
        summary = args
    elif isinstance(args, dict):
        parts = []
        for k, v in args.items():
            if any(s in str(k).lower() for s in _SECRETISH) or isinstance(v, (dict, list)) or v is None:
                continue
            text = str(v).replace("\n", " ")
            parts.append(f"{k}={text[:30] + '...' if len(text) > 30 else text}")
        summary = " ".join(parts)
    else:
        summary = ""
    if len(summary) > 60:
        summary = summary[:57] + "..."
    return f"{module} {summary}".strip()


__all__ = ["Play", "Playbook", "Task", "load_playbook"]
