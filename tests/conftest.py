"""Shared test set-up: offline, and the bundled real photos."""
import glob
import hashlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FACES_DIR = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES_DIR


# -- PostgreSQL ------------------------------------------------------------------------------------
# A throw-away PostgreSQL cluster for the tests: Debian's server binaries, a temporary folder, a free port.
#
# initdb refuses to run as root, so under root (CI) the cluster belongs to the ``postgres`` user and is
# driven through ``runuser``. A password (scram-sha-256) on 127.0.0.1 only; gone when the tests end.


class ClusterUnavailable(RuntimeError):
    pass


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ClusterUnavailable("no PostgreSQL server binaries (Debian: apt-get install postgresql; .ci/install-postgres)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="idavatar-pg-"))
        self.data = self.root / "data"
        if self.as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.user = "postgres"
        self.password = secrets.token_hex(12)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ClusterUnavailable(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        return done

    def start(self) -> "PostgresCluster":
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.as_postgres:
            os.chown(password_file, pwd.getpwnam("postgres").pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                        "-c max_connections=200", "start")
        return self

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-m", "fast", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        except ClusterUnavailable:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _admin(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               dbname="postgres", autocommit=True)

    def create_database(self, name: str) -> str:
        with self._admin() as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def allow_connections(self, url: str, allowed: bool) -> None:
        """Refuse (and cut) every connection to ``url``'s database, or take them again: a store gone away."""
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        with self._admin() as db:
            db.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))


@pytest.fixture(scope="session")
def postgres_cluster():
    """One cluster for the session; skipped (failed under CI) where no server can be started."""
    try:
        cluster = PostgresCluster().start()
    except (ClusterUnavailable, OSError, subprocess.TimeoutExpired, KeyError) as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL cluster could not be started in CI: {error}")
        pytest.skip(f"no PostgreSQL server can be started here: {error}")
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster, request) -> str:
    """A fresh, empty database on the session's cluster."""
    name = "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    return postgres_cluster.create_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """Each store test runs on both backends: a SQLite file, and a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_url")
