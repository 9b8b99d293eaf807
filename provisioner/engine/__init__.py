"""Plan/apply executor, results and the JSON report model."""

from provisioner.engine.executor import Executor, NullEvents, apply_change, batches
from provisioner.engine.results import HostReport, RunReport, TaskResult

__all__ = ["Executor", "HostReport", "NullEvents", "RunReport", "TaskResult", "apply_change", "batches"]
