"""What the machine allows a receiver: CPUs from affinity and cgroup quotas (cgroup files made here), the
open-file limit and the connection cap."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from receiver.machine import (
    DEFAULT_MAX_CONNECTIONS,
    connection_cap,
    cpu_quota,
    default_decrypt_threads,
    raise_file_limit,
    usable_cpus,
)
from receiver.settings import ConfigError


def cgroup_tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A /proc/self/cgroup with ``membership`` and a cgroup mount holding ``files`` (relative path: content)."""
    tmp_path.mkdir(exist_ok=True)
    proc = tmp_path / "cgroup"
    proc.write_text(membership)
    root = tmp_path / "sys-fs-cgroup"
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return proc, root


def test_a_cgroup_v2_quota_bounds_the_cpus_and_the_tightest_ancestor_wins(tmp_path: Path) -> None:
    proc, root = cgroup_tree(
        tmp_path,
        "0::/kubepods/pod1/kayle\n",
        {"cpu.max": "max 100000\n", "kubepods/pod1/cpu.max": "300000 100000\n", "kubepods/pod1/kayle/cpu.max": "max"},
    )
    assert cpu_quota(proc, root) == 3.0
    assert usable_cpus(8, proc, root) == 3
    assert usable_cpus(2, proc, root) == 2  # the affinity is tighter


def test_a_fractional_quota_rounds_down_but_never_below_one(tmp_path: Path) -> None:
    proc, root = cgroup_tree(tmp_path, "0::/\n", {"cpu.max": "150000 100000"})
    assert usable_cpus(4, proc, root) == 1
    proc, root = cgroup_tree(tmp_path / "half", "0::/\n", {"cpu.max": "50000 100000"})
    assert usable_cpus(4, proc, root) == 1


def test_a_cgroup_v1_cfs_quota_bounds_the_cpus(tmp_path: Path) -> None:
    proc, root = cgroup_tree(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cpu_quota(proc, root) == 2.0
    assert usable_cpus(16, proc, root) == 2


def test_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    unlimited = {"cpu.max": "max 100000", "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    proc, root = cgroup_tree(tmp_path, "1:cpu:/\n0::/\n", unlimited)
    assert cpu_quota(proc, root) is None
    assert usable_cpus(6, proc, root) == 6
    assert usable_cpus(6, tmp_path / "no-such-file", root) == 6


def test_decrypt_threads_only_for_a_lone_process_with_a_core_to_spare() -> None:
    assert default_decrypt_threads(processes=1, cpus=2) == 2
    assert default_decrypt_threads(processes=1, cpus=1) == 0
    assert default_decrypt_threads(processes=4, cpus=4) == 0


def test_the_connection_cap_stays_below_the_open_file_limit() -> None:
    assert connection_cap(None, 1_048_576) == DEFAULT_MAX_CONNECTIONS
    assert connection_cap(None, 1024) == 768
    assert connection_cap(500, 1024) == 500
    with pytest.raises(ConfigError, match=r"^KAYLE_MAX_CONNECTIONS: 1000 is more .*at most 768, .*ulimit -n"):
        connection_cap(1000, 1024)


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, before[1]), before[1]))
        assert raise_file_limit() == before[1] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
