"""tests.processes.free_port: the two legs of ``make test`` run at once, each with a port range of its own
(``XMPPAUTH_TEST_PORTS``), below the kernel's ephemeral ports, so neither can be handed the other's ports."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests import processes

ROOT = Path(__file__).resolve().parent.parent


def _held_port_with_a_free_neighbour() -> socket.socket:
    while True:
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", held.getsockname()[1] + 1))
                return held
            except OSError:
                held.close()


def test_ports_come_from_the_legs_range_and_skip_one_that_is_held(monkeypatch):
    held = _held_port_with_a_free_neighbour()
    port = held.getsockname()[1]
    try:
        monkeypatch.setenv(processes.PORTS_VARIABLE, f"{port}-{port + 1}")
        monkeypatch.setattr(processes, "_HANDED_OUT", set())
        assert processes.free_port() == port + 1  # its one other port: the held one is never handed out
    finally:
        held.close()


def test_without_a_range_ports_are_the_kernels_and_never_handed_out_twice(monkeypatch):
    monkeypatch.delenv(processes.PORTS_VARIABLE, raising=False)
    ports = [processes.free_port() for _ in range(20)]
    assert len(set(ports)) == 20


def test_a_range_with_nothing_free_left_is_an_error_not_a_hang(monkeypatch):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        monkeypatch.setenv(processes.PORTS_VARIABLE, f"{port}-{port}")
        with pytest.raises(RuntimeError, match="no free port left"):
            processes.free_port()
    finally:
        held.close()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_two_legs_have_disjoint_ranges_below_the_ephemeral_ports():
    commands = {
        leg: subprocess.run(
            ["make", "-n", "-B", f"test-{leg}"], cwd=ROOT, capture_output=True, text=True, timeout=60
        ).stdout
        for leg in ("sqlite", "postgres")
    }
    ranges = {}
    for leg, text in commands.items():
        found = re.search(r"XMPPAUTH_TEST_PORTS=(\d+)-(\d+)", text)
        assert found, text
        ranges[leg] = range(int(found[1]), int(found[2]) + 1)
    assert not set(ranges["sqlite"]) & set(ranges["postgres"])
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ranges["sqlite"].stop, ranges["postgres"].stop) <= low


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_two_legs_count_their_metrics_in_their_own_directories_emptied_at_start():
    """A CI run failed tests/admin/test_metrics.py's login counters on the PostgreSQL leg: both legs counted
    into the checkout's var/metrics, and the SQLite leg's count landed between that test's two scrapes."""
    directories = {}
    for leg in ("sqlite", "postgres"):
        text = subprocess.run(
            ["make", "-n", "-B", f"test-{leg}"], cwd=ROOT, capture_output=True, text=True, timeout=60
        ).stdout
        found = re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", text)
        assert found, text
        directories[leg] = found[1]
        assert f"rm -rf {found[1]}" in text  # a leg starts from no counters: no other run's files summed
    assert directories["sqlite"] != directories["postgres"]
