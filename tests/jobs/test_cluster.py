"""The test session's own cluster is started as the suite starts one: loopback only; drivers join it at 127.0.0.1."""

from __future__ import annotations

import psutil
import pytest

from jobs.cluster import _is_loopback


def test_the_session_cluster_listens_on_loopback_only(ray_cluster):
    me = psutil.Process()
    ours = {me.pid, *(p.pid for p in me.children(recursive=True))}
    listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid in ours}
    assert listening, "the session cluster's processes listen on nothing"
    assert listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, sorted(listening)
    assert ray_cluster.get_runtime_context().gcs_address.startswith("127.0.0.1:")


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:6379", True), ("127.3.2.1:6379", True), ("localhost:6379", True), ("[::1]:6379", True),
    ("ray://127.0.0.1:10001", True), ("192.0.2.2:6379", False), ("head.cluster:6379", False), ("auto", False),
])
def test_a_driver_joins_with_the_multi_machine_switch_off_only_at_loopback_addresses(address, loopback):
    assert _is_loopback(address) is loopback
