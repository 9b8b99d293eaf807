"""The executor: the one place that decides whether planned changes are applied.

Connection drops: facts (a read) and steps marked ``retry_safe`` (Change/Check) are run again once on a
fresh connection; any other step interrupted by a lost connection is not repeated: the host is reported
unreachable and the next run re-plans from what is actually on the host.

Strategy (Ansible's "linear"): for each play, hosts are split into ``serial`` batches; within a batch
each task runs on all hosts in parallel (bounded by ``forks``) before the next task starts. Each host
gets exactly one connection for the whole run, and facts are gathered in one round trip, again only
after a task changed that host. Handlers run once at the end of the play on hosts where a notifying
task changed something.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from provisioner import trace
from provisioner.connection.base import ShellConnection
from provisioner.engine.lock import RunLock, this_run
from provisioner.engine.results import RunReport, Status, TaskResult, redact, redact_data
from provisioner.errors import ConnectError, HostKeyError, ProvisionerError
from provisioner.facts import HostFacts, gather
from provisioner.modules.base import (
    FLAGS,
    ApplyContext,
    Change,
    Check,
    CheckFailed,
    CheckOutcome,
    Module,
    NoOp,
    PlanContext,
    registry,
)
from provisioner.steps import StepState

if TYPE_CHECKING:
    from provisioner.inventory import Inventory
    from provisioner.playbook import Play, Playbook, Task

Connector = Callable[[str], ShellConnection]
T = TypeVar("T")


def inventory_secrets(inventory: Inventory) -> tuple[str, ...]:
    """Every password and key passphrase in the inventory (connection defaults and hosts)."""
    found: list[str] = []
    for holder in [inventory.connection, *inventory.hosts.values()]:
        for name in ("password", "key_passphrase"):
            value = getattr(holder, name, None)
            if value is not None:
                found.append(value.get_secret_value())
    return tuple(s for s in dict.fromkeys(found) if s)


@dataclass(frozen=True)
class LockSpec:
    """Where and how the run takes the cluster lock (apply only)."""

    host: str
    timeout: float = 0.0
    break_lock: bool = False
    command: str | None = None


class Events(Protocol):
    """What the live display is told. All methods may be called from worker threads."""

    def play_start(self, play: str, hosts: Sequence[str]) -> None: ...
    def task_start(self, play: str, task: str, hosts: Sequence[str]) -> None: ...
    def host_result(self, result: TaskResult, check: bool) -> None: ...
    def log(self, host: str, message: str) -> None: ...


class NullEvents:
    def play_start(self, play: str, hosts: Sequence[str]) -> None:
        pass

    def task_start(self, play: str, task: str, hosts: Sequence[str]) -> None:
        pass

    def host_result(self, result: TaskResult, check: bool) -> None:
        pass

    def log(self, host: str, message: str) -> None:
        pass


@dataclass
class _HostState:
    conn: ShellConnection | None = None
    facts: HostFacts | None = None
    stale: bool = True
    dead: bool = False  # failed or unreachable: no further tasks this run
    lock: threading.Lock = field(default_factory=threading.Lock)


def batches(hosts: Sequence[str], serial: int | str | None) -> list[list[str]]:
    if not serial or not hosts:
        return [list(hosts)]
    if isinstance(serial, str) and serial.endswith("%"):
        size = max(1, math.floor(len(hosts) * float(serial[:-1]) / 100))
    else:
        size = max(1, int(serial))
    return [list(hosts[i : i + size]) for i in range(0, len(hosts), size)]


class Executor:
    def __init__(
        self,
        inventory: Inventory,
        connector: Connector,
        *,
        check: bool,
        forks: int = 50,
        limit: Iterable[str] | None = None,
        options: Mapping[str, Any] | None = None,
        events: Events | None = None,
        mode: str | None = None,
        lock: LockSpec | None = None,
    ) -> None:
        self.inventory = inventory
        self.connector = connector
        self.check = check
        self.forks = max(1, forks)
        self.limit = set(limit) if limit is not None else None
        self.options = dict(options or {})
        self.events: Events = events or NullEvents()
        self.report = RunReport(mode=mode or ("plan" if check else "apply"))  # type: ignore[arg-type]
        self._hosts: dict[str, _HostState] = {}
        self._registry = registry()
        self._modules: dict[str, Module[Any]] = {}  # instantiated on first use
        self._watch: dict[str, set[str]] = {}
        self._probes: dict[str, dict[str, str]] = {}
        self._fact_sections: dict[str, set[str]] = {}  # optional fact sections each host's tasks need
        self._run_start = time.monotonic()  # reset when run() starts; task start times count from it
        self._view_epoch = 0  # report.changed when cluster-view tasks last refreshed their facts
        self._pool = ThreadPoolExecutor(max_workers=self.forks, thread_name_prefix="host")
        self.lock_spec = lock
        self._lock: RunLock | None = None
        # inventory secrets (passwords, passphrases) are masked in every message the run reports
        self._secrets = inventory_secrets(inventory)
        trace.add_secrets(*self._secrets)
        self._dropped: dict[str, list[ShellConnection]] = {}  # connections lost (and replaced) during the run
        self._untrusted: set[str] = set()  # hosts whose SSH host key did not match

    def _module(self, name: str) -> Module[Any]:
        if name not in self._modules:
            self._modules[name] = self._registry[name]()
        return self._modules[name]

    # ---- connections and facts -------------------------------------------------------------

    def _state(self, host: str) -> _HostState:
        if host not in self._hosts:
            self._hosts[host] = _HostState()
        return self._hosts[host]

    def _mark_unreachable(self, host: str, reason: str) -> None:
        hr = self.report.host(host)
        hr.unreachable = True
        hr.unreachable_reason = redact(reason, self._secrets)
        self._state(host).dead = True

    def connection(self, host: str) -> ShellConnection:
        """The host's one connection for this run (opened on first use)."""
        st = self._state(host)
        with st.lock:
            if st.conn is None:
                st.conn = self.connector(host)
            return st.conn

    def facts(self, host: str) -> HostFacts:
        st = self._state(host)
        if st.facts is None or st.stale:
            st.facts = self.retrying(
                host,
                "gathering facts",
                True,
                lambda: gather(
                    self.connection(host),
                    files=sorted(self._watch.get(host, set())),
                    probes=self._probes.get(host, {}),
                    dropin=self.inventory.docker.dropin,
                    # optional sections the tasks asked for (set by _register_watches; none before a run)
                    sections=sorted(self._fact_sections.get(host, ())),
                ),
            )
            st.stale = False
        return st.facts

    def retrying(self, host: str, what: str, safe: bool, fn: Callable[[], T]) -> T:
        """``fn()``; when an open connection drops during it and ``safe``, reconnect and run it once more.

        Only the drop of a connection that had opened is retried (a host that cannot be reached at all
        was already retried by the connector), and never a host key problem.
        """
        try:
            return fn()
        except HostKeyError:
            raise
        except ConnectError as e:
            if not safe or self._state(host).conn is None:
                raise
            self.events.log(host, f"connection lost while {what} ({e}); reconnecting and trying once more")
            st = self._state(host)
            with st.lock:
                old, st.conn = st.conn, None
            if old is not None:
                self._dropped.setdefault(host, []).append(old)
                with contextlib.suppress(Exception):
                    old.close()
            return fn()

    def _prepare(self, host: str) -> bool:
        """Connect and gather facts; False (and reported) when the host is unreachable or broken."""
        st = self._state(host)
        if st.dead:
            return False
        try:
            self.facts(host)
            return True
        except ConnectError as e:
            self._mark_unreachable(host, str(e))
            if isinstance(e, HostKeyError):
                self._untrusted.add(host)
        except ProvisionerError as e:
            self._record(TaskResult("", "gather facts", "facts", host, "failed", str(e)))
            st.dead = True
        return False

    def _register_watches(self, plays: Sequence[Play]) -> None:
        """Collect, per host, every file, probe and fact section any task will need: one round trip gets all."""
        for play in plays:
            for task in [*play.tasks, *play.handlers]:
                mod = self._module(task.module)
                for host in play.hosts:
                    self._fact_sections.setdefault(host, set()).update(mod.fact_sections(task.args, self.inventory))
                    self._watch.setdefault(host, set()).update(mod.watch(task.args, self.inventory))
                    self._probes.setdefault(host, {}).update(mod.probes(task.args))
                    self._probes[host].update(mod.inventory_probes(task.args, self.inventory))

    # ---- running ---------------------------------------------------------------------------

    def _record(self, result: TaskResult) -> None:
        secrets = (*self._secrets, *(s for c in result.changes for s in c.secrets))
        result.message = redact(result.message, secrets)
        if result.started is None:
            result.started = max(0.0, time.monotonic() - self._run_start - result.duration)
        if result.data is not None:
            result.data = redact_data(result.data, secrets)
        self.report.host(result.host).results.append(result)
        self.events.host_result(result, self.check)

    def gathered_facts(self) -> dict[str, HostFacts]:
        """Every host's facts as this run last gathered them (for reports drawn after the run)."""
        return {h: s.facts for h, s in self._hosts.items() if s.facts is not None}

    def run(self, playbook: Playbook) -> RunReport:
        start = self._run_start = time.monotonic()
        try:
            self._register_watches(playbook.plays)
            hosts = list(dict.fromkeys(h for p in playbook.plays for h in p.hosts if self._in_limit(h)))
            # connect and gather facts everywhere while the lock is being taken; if the lock was held by
            # another run, what we gathered may be outdated: it is gathered again under the lock
            lock = self._pool.submit(self._take_lock, self.lock_spec) if self.lock_spec else None
            self._map(self._prepare, hosts)
            if lock is not None and not self._lock_taken(lock.result()):
                return self.report
            if not self.preflight(playbook, hosts):
                return self.report
            for play in playbook.plays:
                if not self.run_play(play):
                    break
        finally:
            self.report.duration = time.monotonic() - start
            self.close()
        return self.report

    def _in_limit(self, host: str) -> bool:
        return self.limit is None or host in self.limit

    def _take_lock(self, spec: LockSpec | None) -> ProvisionerError | bool:
        """Take the cluster lock; returns whether it had to wait, or the error that stopped it."""
        assert spec is not None
        try:
            lock = RunLock(self.connection(spec.host), this_run(spec.command))
            waited = lock.acquire(
                spec.timeout, break_lock=spec.break_lock, warn=lambda m: self.events.log(spec.host, m)
            )
        except ProvisionerError as e:
            return e
        self._lock = lock
        return waited

    def _lock_taken(self, outcome: ProvisionerError | bool) -> bool:
        assert self.lock_spec is not None
        if isinstance(outcome, ProvisionerError):
            # nothing was touched: report why the run did not start
            if isinstance(outcome, ConnectError):
                self._mark_unreachable(self.lock_spec.host, str(outcome))
            self.report.error = f"could not take the cluster lock: {outcome}"
            return False
        if outcome:
            for st in self._hosts.values():
                st.stale = True
        return True

    def preflight(self, playbook: Playbook, hosts: Sequence[str]) -> bool:
        """Ask every task whether it can work on each of its hosts, before anything is changed.

        A refusal stops the whole run with nothing touched; each reason names the host and, where
        there is one, the alternative that would work there.
        """
        self._map(self._prepare, hosts)  # no-op unless facts went stale while waiting for the lock
        if self._untrusted:
            # a host key that does not match may mean an attacker in the middle: change nothing anywhere
            # until an operator has looked, rather than converging the hosts that happened to pass
            names = ", ".join(sorted(self._untrusted))
            self.report.error = (
                f"the SSH host key of {names} does not match known_hosts; nothing was changed on any host.\n"
                "    fix: verify the new key out of band (console, provider); if the host was reinstalled, "
                "replace its known_hosts entry (ssh-keygen -R ADDRESS, then record the new key) and run again"
            )
            return False
        problems: dict[str, list[str]] = {}
        for play in playbook.plays:
            for task in [*play.tasks, *play.handlers]:
                mod = self._module(task.module)
                for host in play.hosts:
                    st = self._state(host)
                    if not self._in_limit(host) or st.dead or st.facts is None:
                        continue
                    ctx = self._plan_context(host)
                    for reason in mod.preflight(ctx, task.args):
                        if reason not in problems.setdefault(host, []):
                            problems[host].append(reason)
        problems = {h: r for h, r in problems.items() if r}
        if not problems:
            return True
        for host, reasons in problems.items():
            self._record(TaskResult("preflight", "preflight", "preflight", host, "failed", "\n".join(reasons)))
        self.report.error = "preflight refused the run; nothing was changed on any host:\n" + "\n".join(
            f"  {host}: {reason}" for host, reasons in problems.items() for reason in reasons
        )
        return False

    def _plan_context(self, host: str) -> PlanContext:
        st = self._state(host)
        assert st.facts is not None
        return PlanContext(
            host=host,
            facts=st.facts,
            inventory=self.inventory,
            all_facts={h: s.facts for h, s in self._hosts.items() if s.facts is not None},
            options=self.options,
            run_changed=self.report.changed,
        )

    def close(self) -> None:
        # in-flight host work finishes first (never abandon a restart half-way, nor cut its connection or
        # release the lock under it); queued work is dropped
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._lock is not None:
            # the lock must go even when the run was interrupted; a dead connection leaves it stale
            with contextlib.suppress(Exception):
                self._lock.release()
            self._lock = None
        for name, st in self._hosts.items():
            used = [*self._dropped.get(name, []), *([st.conn] if st.conn is not None else [])]
            if used:
                self.report.connections[name] = {
                    "connects": sum(c.stats.connects for c in used),
                    "round_trips": sum(c.stats.round_trips for c in used),
                }
            if st.conn is not None:
                # closing must never mask the run's result
                with contextlib.suppress(Exception):
                    st.conn.close()
                st.conn = None

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def run_play(self, play: Play) -> bool:
        """Run one play; False when the run must stop (any_errors_fatal / max_fail_percentage)."""
        hosts = [h for h in play.hosts if self.limit is None or h in self.limit]
        for h in hosts:
            self.report.host(h)
        self.events.play_start(play.name, hosts)
        for batch in batches(hosts, play.serial):
            live = [h for h, ok in zip(batch, self._map(self._prepare, batch), strict=True) if ok]
            notified: dict[str, set[str]] = {}
            for task in play.tasks:
                live = [h for h in live if not self._state(h).dead]
                if not live:
                    break
                targets = live[:1] if task.run_once else live
                self.events.task_start(play.name, task.name, targets)
                results = self.run_task(play, task, targets)
                for r in results:
                    if r.status == "changed":
                        for name in task.notify:
                            notified.setdefault(name, set()).add(r.host)
                if not self._within_failure_budget(play, batch):
                    return False
            for handler in play.handlers:
                targets = [h for h in live if h in notified.get(handler.name, set()) and not self._state(h).dead]
                if targets:
                    self.events.task_start(play.name, f"handler: {handler.name}", targets)
                    self.run_task(play, handler, targets)
            if not self._within_failure_budget(play, batch):
                return False
        return True

    def _within_failure_budget(self, play: Play, batch: Sequence[str]) -> bool:
        dead = sum(1 for h in batch if self._state(h).dead)
        if dead and play.any_errors_fatal:
            self.report.error = f"play {play.name!r}: stopped because a host failed and any_errors_fatal is set"
            return False
        if play.max_fail_percentage is not None and batch:
            pct = 100.0 * dead / len(batch)
            if pct > play.max_fail_percentage:
                self.report.error = (
                    f"play {play.name!r}: {pct:.0f}% of hosts failed, more than max_fail_percentage "
                    f"{play.max_fail_percentage:g}%"
                )
                return False
        return True

    def run_task(self, play: Play, task: Task, hosts: Sequence[str]) -> list[TaskResult]:
        if not self.check and self._module(task.module).cluster_view and self.report.changed > self._view_epoch:
            # what other hosts changed may show here (a global network once its store runs): look again
            for h in hosts:
                self._state(h).stale = True
            self._map(self._prepare, hosts)
            self._view_epoch = self.report.changed
        planned: list[tuple[str, list[Change] | Check | TaskResult]] = list(
            zip(hosts, self._map(lambda h: self._plan(play, task, h), hosts), strict=True)
        )
        results: dict[str, TaskResult] = {}
        to_apply: list[tuple[str, list[Change]]] = []
        left: dict[str, list[Change]] = {}  # optional changes apply leaves out for want of their flag
        for host, p in planned:
            if isinstance(p, TaskResult):
                results[host] = p
            elif isinstance(p, Check):
                results[host] = self._check(play, task, host, p)
            elif self.check:
                results[host] = TaskResult(play.name, task.name, task.module, host, "changed", "", p)
            elif refused := self._refused(p):
                results[host] = TaskResult(play.name, task.name, task.module, host, "failed", refused, p)
            else:
                left[host] = [c for c in p if c.optional and self._missing_flag(c)]
                todo = [c for c in p if not (c.optional and self._missing_flag(c))]
                if todo:
                    to_apply.append((host, todo))
                else:
                    msg = _wanting_flags("left as is", left[host])
                    results[host] = TaskResult(play.name, task.name, task.module, host, "ok", msg, report=True)
        exclusive = [(h, c) for h, c in to_apply if any(ch.exclusive for ch in c)]
        parallel = [(h, c) for h, c in to_apply if not any(ch.exclusive for ch in c)]
        for (host, _), res in zip(
            parallel, self._map(lambda hc: self._apply(play, task, hc[0], hc[1]), parallel), strict=True
        ):
            results[host] = res
        # exclusive changes (rolling restarts): one host at a time, in inventory order; stop at the first failure
        failed_at: str | None = None
        for host, changes in exclusive:
            if failed_at is not None:
                msg = f"not applied: {failed_at} failed first (changes in this task stop at the first failure)"
                results[host] = TaskResult(play.name, task.name, task.module, host, "failed", msg, changes)
                self._state(host).dead = True
                continue
            # on a worker thread, like every host step: an interrupt (Ctrl-C, SIGTERM) reaches the main thread
            # only, so the restart in flight is finished and verified before the run unwinds
            results[host] = self._pool.submit(self._apply, play, task, host, changes).result()
            if results[host].status in ("failed", "unreachable"):
                failed_at = host
        ordered = [results[h] for h in hosts if h in results]
        for r in ordered:
            if r.status == "changed" and left.get(r.host):
                r.message = _wanting_flags("left as is", left[r.host])
            if r.status != "unreachable":
                self._record(r)
            if r.status == "failed":
                self._state(r.host).dead = True
        return ordered

    def _missing_flag(self, change: Change) -> bool:
        return change.requires is not None and not self.options.get(change.requires)

    def _refused(self, changes: list[Change]) -> str:
        """Why apply must not carry out these changes without a flag the user did not give ('' if it may)."""
        missing = [c for c in changes if not c.optional and self._missing_flag(c)]
        return _wanting_flags("not applied", missing) if missing else ""

    def _context(self, host: str, secrets: tuple[str, ...] = ()) -> ApplyContext:
        st = self._state(host)
        assert st.facts is not None
        hidden = (*self._secrets, *secrets)
        return ApplyContext(
            host=host,
            conn=self.connection(host),
            facts=st.facts,
            inventory=self.inventory,
            log=lambda msg: self.events.log(host, redact(msg, hidden)),
            connection_to=self.connection,
            all_facts={h: s.facts for h, s in self._hosts.items() if s.facts is not None},
            options=self.options,
            fan_out=self.fan_out,
        )

    def fan_out(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``fn`` over ``items`` on the run's worker pool (so bounded by --forks), results in order.
        From a pool worker (e.g. a check inside a task that already runs on the pool), in turn: waiting
        on the pool from its own worker could deadlock it."""
        if threading.current_thread().name.startswith("host"):
            return [fn(i) for i in items]
        return list(self._pool.map(fn, items))

    def _check(self, play: Play, task: Task, host: str, check: Check) -> TaskResult:
        t0 = time.monotonic()
        if self.check:
            return TaskResult(play.name, task.name, task.module, host, "ok", f"not run in plan: {check.description}")
        data: dict[str, Any] | None = None
        try:
            status: Status = "ok"
            out = self.retrying(host, check.description, check.retry_safe, lambda: check.run(self._context(host)))
            message, data = (out.text, out.data) if isinstance(out, CheckOutcome) else (out, None)
        except Exception as e:  # classified by _failure
            status, message = self._failure(host, task.module, e)
            if isinstance(e, CheckFailed):
                data = e.data
        return TaskResult(
            play.name, task.name, task.module, host, status, message, [], time.monotonic() - t0, report=True, data=data
        )

    def _failure(self, host: str, module: str, e: Exception) -> tuple[Status, str]:
        """What an exception from a module means for its host: unreachable, failed, or a bug (still
        only that host fails: one module's bug must not take the run down)."""
        if isinstance(e, ConnectError):
            self._mark_unreachable(host, str(e))
            return "unreachable", str(e)
        if isinstance(e, ProvisionerError):
            return "failed", str(e)
        return "failed", f"internal error in module {module}: {type(e).__name__}: {e}"

    def _plan(self, play: Play, task: Task, host: str) -> list[Change] | Check | TaskResult:
        t0 = time.monotonic()

        def result(status: Status, message: str = "") -> TaskResult:
            return TaskResult(play.name, task.name, task.module, host, status, message, [], time.monotonic() - t0)

        try:
            facts = self.facts(host)
            if task.when:
                from provisioner.when import parse

                if not parse(task.when).evaluate(facts.model_dump()):
                    return result("skipped", f"when: {task.when} is false")
            plan = self._module(task.module).plan(self._plan_context(host), task.args)
        except Exception as e:  # classified by _failure
            return result(*self._failure(host, task.module, e))
        if isinstance(plan, NoOp):
            return result("ok", plan.reason)
        if not plan:
            return result("ok", "nothing to do")
        if isinstance(plan, list):
            # inventory secrets are hidden in every rendering of a change (diff, steps, notes) too
            for change in plan:
                change.secrets = tuple(dict.fromkeys((*change.secrets, *self._secrets)))
                trace.add_secrets(*change.secrets)
        return plan

    def _apply(self, play: Play, task: Task, host: str, changes: list[Change]) -> TaskResult:
        t0 = time.monotonic()
        st = self._state(host)
        secrets = (*self._secrets, *(s for c in changes for s in c.secrets))
        try:
            for change in changes:
                # a fresh context per change: after a retried drop the connection is a new one
                self.retrying(
                    host,
                    redact(change.description, secrets),
                    change.retry_safe,
                    lambda c=change: apply_change(self._context(host, secrets), c),  # type: ignore[misc]
                )
            status: Status = "changed"
            message = ""
        except Exception as e:  # classified by _failure
            status, message = self._failure(host, task.module, e)
        finally:
            st.stale = True
            # a step run on another host over its connection changed that host too: its facts are stale
            for other in {getattr(s, "host", None) for c in changes for s in c.steps} - {None, host}:
                self._state(str(other)).stale = True
        return TaskResult(play.name, task.name, task.module, host, status, message, changes, time.monotonic() - t0)


def _wanting_flags(outcome: str, changes: list[Change]) -> str:
    """``outcome`` of changes whose flag was not given: which flags, the changes, the fix."""
    flags = sorted({FLAGS.get(c.requires or "", c.requires or "") for c in changes})
    return (
        f"{outcome}, since this needs " + " and ".join(flags) + ":\n"
        + "\n".join(f"    {redact(c.description, c.secrets)}" for c in changes)
        + f"\n    fix: pass {' '.join(flags)} to carry these out (or change the inventory to match the hosts)"
    )


def apply_change(ctx: ApplyContext, change: Change) -> None:
    """Run the change's steps in order, the very objects ``plan`` printed; when one fails, run the
    rollback steps (each on its own: one failing does not skip the others), then report the failure,
    or the error a rollback step raised to say how the rollback went."""
    state = StepState()
    try:
        for step in change.steps:
            progress = getattr(step, "progress", "")
            if progress:
                ctx.log(progress)
            with trace.step(ctx.host, step.render()):
                step.run(ctx, state)
    except BaseException as failure:
        state.failure = failure
        outcome: ProvisionerError | None = None
        for step in change.rollback:
            with trace.step(ctx.host, step.render()):
                try:
                    step.run(ctx, state)
                except ProvisionerError as e:
                    outcome = outcome or e
                except Exception:  # a broken rollback step must not hide the failure
                    pass
        if outcome is not None and isinstance(failure, Exception):
            raise outcome from failure
        raise
