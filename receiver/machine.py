"""What the machine allows a receiver: the CPUs it may use, and how many connections it may hold open."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from receiver.settings import ConfigError

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_MAX_CONNECTIONS = 4096
#: Decryption threads in a lone receiver process on a machine with a spare core (docs/design.md).
LONE_PROCESS_DECRYPT_THREADS = 2
_UNLIMITED_FILES = 1 << 20


def usable_cpus(affinity: int | None = None, proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on (its affinity), bounded by its cgroup's CPU quota; at least 1."""
    cpus = len(os.sched_getaffinity(0)) if affinity is None else affinity
    quota = cpu_quota(proc_cgroup, root)
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)


def cpu_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroup and its ancestors, v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``; None when there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy, mounted at the root
            quotas += _quotas(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            quotas += _quotas(root / controllers, path, _v1_quota)
    return min(quotas, default=None)


def _quotas(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    # The cgroup's directory and every ancestor up to the mount: a parent's quota bounds its children.
    # (In a container the path may name the host's hierarchy; the container's own limit is at the mount.)
    relative = PurePosixPath(path).relative_to("/") if path.startswith("/") else PurePosixPath(path)
    found = []
    for directory in [mount / relative, *(mount / parent for parent in relative.parents)]:
        quota = read(directory)
        if quota is not None:
            found.append(quota)
    return found


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def default_decrypt_threads(processes: int, cpus: int) -> int:
    """Threads only help a lone process with a core to spare; N processes on N cores decrypt inline."""
    return LONE_PROCESS_DECRYPT_THREADS if processes == 1 and cpus > 1 else 0


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return _UNLIMITED_FILES if soft == resource.RLIM_INFINITY else soft


def connection_cap(configured: int | None, file_limit: int) -> int:
    """``KAYLE_MAX_CONNECTIONS``, or its default; a quarter of the file descriptors stays for everything else."""
    allowed = file_limit * 3 // 4
    if configured is None:
        return max(1, min(DEFAULT_MAX_CONNECTIONS, allowed))
    if configured > allowed:
        raise ConfigError(
            f"KAYLE_MAX_CONNECTIONS: {configured} is more than this process can hold open (at most {allowed}, "
            f"three quarters of its open-file limit {file_limit}); lower it or raise the limit (ulimit -n)"
        )
    return configured
