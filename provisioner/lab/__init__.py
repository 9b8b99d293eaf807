"""`provisioner lab`: a local cluster of real hosts (systemd + sshd + dockerd containers) for demos and e2e.

Import-light: docker is imported only when a lab function runs.
"""

from provisioner.lab.core import HostStatus, LabInfo, LabStatus, lab_down, lab_exec, lab_status, lab_up

__all__ = ["HostStatus", "LabInfo", "LabStatus", "lab_down", "lab_exec", "lab_status", "lab_up"]
