"""A private PostgreSQL server for tests: a throwaway cluster in a temp dir, on a free 127.0.0.1 port.

Never the machine's own server. ``scripts/test`` installs Debian's ``postgresql`` package when no
``initdb`` is found (``ensure_postgres_binaries`` in ``scripts/lib.sh``); without the binaries the
tests that need PostgreSQL skip. PostgreSQL refuses to run as root: as root, the cluster belongs to
the ``postgres`` system user (``nobody`` if there is none).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.processes import free_port

SUPERUSER = "kayle"


def binaries() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: from PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        directory = Path(found).resolve().parent
        if (directory / "postgres").exists():
            return directory
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass(frozen=True)
class Server:
    port: int

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new, empty database for one test; dropped afterwards (its connections are ended)."""
        import psycopg

        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            yield self.dsn(name)
        finally:
            with psycopg.connect(self.dsn(), autocommit=True) as admin:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _owner() -> pwd.struct_passwd | None:
    """Whom the cluster runs as: ``None`` (this user) unless this is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


@contextmanager
def private_postgres(timeout: float = 120.0) -> Iterator[Server]:
    """initdb a cluster in a temp dir, run ``postgres`` on a free port (fsync off), stop it and delete the dir."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("initdb")
    owner = _owner()
    uid, gid = (owner.pw_uid, owner.pw_gid) if owner is not None else (None, None)
    # pytest's own temp dirs are private to root: the cluster's owner could not enter them.
    base = Path(tempfile.mkdtemp(prefix="kayle-postgres-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, log_path = base / "data", base / "server.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(base)}
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--no-sync"],
            env=env, cwd=base, check=True, capture_output=True, timeout=timeout,
            user=uid, group=gid, extra_groups=[] if owner is not None else None,
        )
        port = free_port()
        argv = [
            str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
        ]
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv, env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT,
                user=uid, group=gid, extra_groups=[] if owner is not None else None,
            )
        server = Server(port)
        _wait_ready(server, process, log_path, timeout)
        yield server
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, no checkpoint wait on clients
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(server: Server, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with psycopg.connect(server.dsn(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres did not accept connections within {timeout} s") from None
            time.sleep(0.1)
