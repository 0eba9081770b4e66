"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package (`.ci/run`
installs it), a fresh data directory made by initdb, pg_ctl on a free port with its unix socket
in a private temp folder, and everything removed afterwards.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user the package
creates. Missing binaries fail the test with the command that installs them: a skip would let
CI pass without ever testing the PostgreSQL-backed instance.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

INSTALL_HINT = "apt-get install -y postgresql (what .ci/run does)"


def pg_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"running as root and there is no 'postgres' user to run the server: {INSTALL_HINT}")
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a SQLAlchemy/psycopg2 URL of a fresh database `dagster` on 127.0.0.1."""
    bindir = pg_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="sap_ometria_pg_"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(sock, entry.pw_uid, entry.pw_gid)
    port = free_port()
    log = root / "server.log"

    def run(cmd: list[str]) -> None:
        done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")

    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust",
             "--encoding=UTF8", "--no-sync"])
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
             f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
             "-c synchronous_commit=off -c max_connections=200", "start"])
        run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster"])
        yield f"postgresql+psycopg2://dagster@127.0.0.1:{port}/dagster"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                            "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
