"""What a module is: an argument model and a pure ``plan`` that returns changes.

``plan`` does no I/O. It looks at the host's facts (and the inventory) and returns either a list of
``Change`` objects or a ``NoOp`` with the reason nothing needs doing. Whether changes are applied is
decided only by the executor; a module never sees a check-mode flag.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationInfo

from provisioner.errors import TaskError
from provisioner.steps import Step

if TYPE_CHECKING:
    from provisioner.connection.base import ShellConnection
    from provisioner.facts import HostFacts
    from provisioner.inventory import Inventory


def local_file(v: Path | None, info: ValidationInfo) -> Path | None:
    """A module argument naming a file on this machine: ``~`` expanded, a relative path taken from the
    playbook's folder (the loader passes it as ``base_dir`` in the validation context); it must exist."""
    if v is None:
        return v
    p = v.expanduser()
    base = (info.context or {}).get("base_dir")
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    if not p.is_file():
        raise ValueError(f"local file {p} does not exist (relative paths are taken from the playbook's folder)")
    return p


class ModuleArgs(BaseModel):
    """Base for every module's arguments: strict, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class ApplyContext:
    host: str
    conn: ShellConnection
    facts: HostFacts
    inventory: Inventory
    # progress lines for the live display ("waiting for Consul leader ...")
    log: Callable[[str], None] = lambda _msg: None
    # the run's one connection to another host, and every gathered host's facts (cross-host steps)
    connection_to: Callable[[str], ShellConnection] | None = None
    all_facts: Mapping[str, HostFacts] = field(default_factory=dict)
    # command-line options (e.g. recreate_networks)
    options: Mapping[str, Any] = field(default_factory=dict)
    # the executor's worker pool (bounded by --forks): fan_out(fn, items) -> [fn(item) ...] in order.
    # Checks use it to work on many hosts at once; called from a pool worker it runs the items in turn.
    fan_out: Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]] = lambda fn, items: [fn(i) for i in items]


@dataclass
class Change:
    """One thing that will change on a host.

    ``steps`` are what the executor runs, in order, and what ``plan`` prints (one line each): the plan
    cannot show anything else than what apply does. For files, ``path``/``before``/``after`` give the
    unified diff the plan shows (the ``Put`` step writes it). ``notes`` are consequences worth a line
    ("restarts Docker: stops 3 running containers"). ``rollback`` runs when a step fails, before the
    error is reported (printed under "on failure"). ``exclusive`` names a group whose changes the
    executor applies one host at a time; after one fails, the group's changes on the remaining hosts
    are not applied (rolling restarts). ``requires`` names a command-line option (e.g.
    ``recreate_networks``) without which apply refuses the change: plan still shows it (exit 3) and
    says which flag makes apply do it. An ``optional`` change is one apply leaves out without its flag
    (and says so) while the task's other changes are still made, instead of refusing them all: a leftover
    that harms nothing where it is (an undeclared container: ``--prune``).
    """

    description: str
    steps: list[Step] = field(default_factory=list)
    path: str | None = None
    before: str | None = None
    after: str | None = None
    notes: list[str] = field(default_factory=list)
    rollback: list[Step] = field(default_factory=list)
    exclusive: str | None = None
    requires: str | None = None
    # without the `requires` flag: left out and reported (True), or the task refused on that host (False)
    optional: bool = False
    # secrets that must never be printed (replaced by *** in every rendering)
    secrets: tuple[str, ...] = ()
    # retry policy when the connection drops mid-change: True only if carrying the change out twice
    # is harmless (e.g. an atomic file write); otherwise the host is reported unreachable, never retried
    retry_safe: bool = False

    @property
    def commands(self) -> list[str]:
        """The steps as printed (plan, JSON ``steps``)."""
        return [s.render() for s in self.steps]


# command-line options a change can require, and the flag that gives each
FLAGS = {"recreate_networks": "--recreate-networks", "prune": "--prune", "adopt": "--adopt"}


@dataclass(frozen=True)
class NoOp:
    reason: str


@dataclass
class CheckOutcome:
    """What a check found: ``text`` for the report (e.g. the rendered matrix) and ``data`` for the JSON
    report (its ``verify`` key: e.g. every pair with expected, observed and verdict)."""

    text: str
    data: dict[str, Any] | None = None


class CheckFailed(TaskError):
    """A check that ran and found failures: the message, plus the same ``data`` as a passing check."""

    def __init__(self, message: str, fix: str = "", data: dict[str, Any] | None = None) -> None:
        super().__init__(message, fix)
        self.data = data


@dataclass
class Check:
    """A read-only action (e.g. the ping matrix): runs in apply, never counts as a change.

    ``run`` returns a message for the report (e.g. the rendered matrix) or a ``CheckOutcome`` (the message
    and data for the JSON report), or raises a ProvisionerError (``CheckFailed`` to carry data too).
    In plan mode the executor does not run it and reports ``description`` instead.
    """

    description: str
    run: Callable[[ApplyContext], str | CheckOutcome]
    # read-only, so it is run again on a fresh connection when the connection drops
    retry_safe: bool = True


Plan = list[Change] | NoOp | Check


@dataclass
class PlanContext:
    """What plan() may look at: this host's facts, every gathered host's facts, the inventory."""

    host: str
    facts: HostFacts
    inventory: Inventory
    all_facts: Mapping[str, HostFacts] = field(default_factory=dict)
    # options from the command line (e.g. recreate_networks) that change what a plan proposes
    options: Mapping[str, Any] = field(default_factory=dict)
    # how many task results changed something so far in this run (any host)
    run_changed: int = 0


A = TypeVar("A", bound=ModuleArgs)


class Module(Generic[A]):
    """Subclass with ``name``, ``Args`` and ``plan``; register with ``@register``."""

    name: ClassVar[str]
    Args: ClassVar[type[ModuleArgs]]
    # a one-line summary shown by `provisioner modules` and in unknown-module errors
    summary: ClassVar[str] = ""
    # plan() reads state that changes on other hosts (global networks appear once a store runs, a
    # network made by one host is used on another): in apply, after anything changed in the run, the
    # executor gathers its hosts' facts again before planning it
    cluster_view: ClassVar[bool] = False

    def plan(self, ctx: PlanContext, args: A) -> Plan:
        raise NotImplementedError

    def fact_sections(self, args: A, inventory: Inventory) -> Iterable[str]:
        """Names of the optional fact sections plan() needs (gathered in the same one round trip)."""
        return ()

    def watch(self, args: A, inventory: Inventory) -> list[str]:
        """Files whose content, mode and owner plan() needs in the facts."""
        return []

    def probes(self, args: A) -> dict[str, str]:
        """Named shell commands whose exit codes plan() needs (gathered with the facts)."""
        return {}

    def inventory_probes(self, args: A, inventory: Inventory) -> dict[str, str]:
        """Like probes(), for commands that depend on the inventory (e.g. store addresses)."""
        return {}

    def describe(self, args: A) -> str:
        """Default task name when the playbook gives none."""
        return self.name

    def preflight(self, ctx: PlanContext, args: A) -> list[str]:
        """Reasons this task cannot work on this host, each with the alternative that would.

        Called for every task and host with the first facts, before anything changes anywhere; any
        reason stops the whole run. Pure, like plan().
        """
        return []


_REGISTRY: dict[str, type[Module[Any]]] = {}
# built-in modules by name -> the Python module that registers it, imported only when a run uses it
# (filled by provisioner.modules; a run of one playbook pays for the modules it names, not for all)
BUILTIN: dict[str, str] = {}


def register(cls: type[Module[Any]]) -> type[Module[Any]]:
    _REGISTRY[cls.name] = cls
    return cls


class _Registry(Mapping[str, "type[Module[Any]]"]):
    """Every module by name, built-in ones imported on first use."""

    def __getitem__(self, name: str) -> type[Module[Any]]:
        if name not in _REGISTRY and name in BUILTIN:
            importlib.import_module(BUILTIN[name])
        return _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*BUILTIN, *_REGISTRY]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*BUILTIN, *_REGISTRY]))


def registry() -> Mapping[str, type[Module[Any]]]:
    import provisioner.modules  # noqa: F401  (fills BUILTIN)

    return _Registry()
