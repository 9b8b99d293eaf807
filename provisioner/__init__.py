"""provisioner: declarative multi-host Docker networking over SSH."""

__version__ = "0.1.0"
