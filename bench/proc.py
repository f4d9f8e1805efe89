"""What the benchmarks read about a server process from Linux's /proc: CPU time and resident memory.

proc(5): ``/proc/<pid>/stat`` fields 14 and 15 are utime and stime in clock ticks, summed over all the
process's threads (the thread pool that runs the database calls included); ``/proc/<pid>/status`` VmRSS is the
resident set in kB.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


Pids = int | tuple[int, ...]  # one server process, or the processes of one server (runc2s --reuse-port)


def _each(pids: Pids) -> tuple[int, ...]:
    return pids if isinstance(pids, tuple) else (pids,)


def cpu_seconds(pids: Pids) -> float:
    """User plus system CPU time used so far by the process (or all of ``pids``), in seconds (proc(5) stat
    fields 14 and 15)."""
    return sum(_cpu_seconds(pid) for pid in _each(pids))


def _cpu_seconds(pid: int) -> float:
    return stat_ticks(Path(f"/proc/{pid}/stat")) / CLOCK_TICKS


def stat_ticks(path: Path) -> int:
    """utime + stime in clock ticks from a proc(5) ``stat`` file (a process's, or a thread's under task/)."""
    stat = path.read_text()
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15, counted from field 3


def rss_bytes(pids: Pids) -> int:
    """Resident set size of process ``pid`` (or the sum over ``pids``) in bytes (proc(5) status VmRSS)."""
    return sum(_rss_bytes(pid) for pid in _each(pids))


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/{pid}/status has no VmRSS line")


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used since boot, in seconds (proc(5) /proc/stat ``cpu``).

    Busy is user + nice + system + irq + softirq + steal (not idle nor iowait); the benchmarks subtract the
    server's and the client's own time from its growth to show what other processes took meanwhile.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
