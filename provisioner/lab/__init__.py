"""`provisioner lab`: a local cluster of real hosts (systemd + sshd + dockerd containers) for demos and e2e.

Import-light: `provisioner --help` imports this package (the lab sub-command), so the lab's machinery
(lab.core) loads only when one of these names is used, and docker only when a lab function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioner.lab.core import HostStatus, LabInfo, LabStatus, lab_down, lab_exec, lab_status, lab_up

__all__ = ["HostStatus", "LabInfo", "LabStatus", "lab_down", "lab_exec", "lab_status", "lab_up"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from provisioner.lab import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
