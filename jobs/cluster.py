"""Joining or starting a Ray cluster, and KEY=VALUE command-line options: shared by every command."""

from __future__ import annotations

import os
import tomllib

from suite.errors import SuiteError


def connect(address: str | None = None, worker_logs: bool = False) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one; True if started here."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=worker_logs)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=worker_logs)
    return True


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as TOML when it parses (numbers, booleans), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SuiteError(f"expected KEY=VALUE; got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed
