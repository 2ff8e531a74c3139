"""Fixtures shared by the whole suite: real servers started on 127.0.0.1 only.

``postgres_dsn`` starts one throwaway PostgreSQL 15 cluster per test session (initdb into a
temporary directory, loopback only, random port, fsync off) and ``fresh_postgres_db`` gives a
test its own empty database in it. ``initdb`` refuses to run as root; when the tests run as
root (CI does), the cluster runs as the ``postgres`` system user instead.

Hypothesis runs without its per-example deadline: tests assert results, never wall-clock
times, and on a loaded 2-core machine one example of an otherwise fast property can take
seconds (a ``DeadlineExceeded`` there says nothing about the code).

:func:`migrated_sqlite` gives a test a node database as ``migrate.upgrade`` leaves it, as a
copy of one migrated once (Alembic's upgrade of every revision costs 0.1 to 0.3 s, and the
clusters of the suite need three databases a test).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from mpc.local import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"

settings.register_profile("dic-connector", deadline=None)
settings.load_profile("dic-connector")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs two workers), every end-to-end test goes to one
    worker, in file order: those start real node processes and servers and wait on them, so
    they run one at a time as without xdist, while the other worker takes the unit tests."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(pytest.mark.xdist_group("processes"))


def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the project; tests that need it skip clearly when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"../shared is absent (looked for {SHARED_DIR}); run inside the project layout")
    return SHARED_DIR


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN (``postgresql://user@127.0.0.1:port/postgres``) of a throwaway PostgreSQL cluster."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries not found: run `make test`, which installs them")
    base = Path(tempfile.mkdtemp(prefix="dic-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chmod(base, 0o755)
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    port = free_port()

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True,
                              timeout=120)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "dic", "-E", "UTF8",
        "--no-sync", "--locale=C")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off " \
              "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
        "-w", "-t", "60", "start")
    try:
        yield f"postgresql://dic@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _schema_digest() -> str:
    """What the node's migrated schema depends on: every file of ``migrations/`` (the
    connector's revisions aside), the driver around Alembic, and the library versions."""
    from importlib.metadata import version

    import dic_connector.database.migrate as machinery
    from dic_connector.node.store import migrate

    digest = hashlib.sha256()
    for name in ("alembic", "sqlalchemy", "aiosqlite"):
        digest.update(f"{name}=={version(name)}\n".encode())
    sources = [Path(machinery.__file__), Path(migrate.__file__),
               *sorted(p for p in migrate.MIGRATIONS_DIR.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts
                       and "connector" not in p.relative_to(migrate.MIGRATIONS_DIR).parts)]
    for source in sources:
        digest.update(str(source).encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


async def migrated_sqlite(path: Path) -> str:
    """The URL of a new SQLite database at ``path`` with the node's schema at head: a copy of
    a template that ``migrate.upgrade`` built, kept under the system's temporary directory
    under the digest of what the schema depends on (so an edited revision builds a new one),
    written under a scratch name and renamed, so concurrent test processes never see half a
    file."""
    from dic_connector.node.store import migrate

    template = Path(tempfile.gettempdir()) / "dic-test-schemas" / f"node-{_schema_digest()}.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        scratch = template.with_name(f"{template.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        await migrate.upgrade(f"sqlite+aiosqlite:///{scratch}")
        os.replace(scratch, template)
    shutil.copyfile(template, path)
    return f"sqlite+aiosqlite:///{path}"


async def create_database(admin_dsn: str, prefix: str = "t") -> str:
    """DSN of a new, empty database ``<prefix>_<random>`` in the cluster of ``admin_dsn``."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
async def fresh_postgres_db(postgres_dsn: str) -> AsyncIterator[str]:
    """DSN of a new, empty database in the session cluster, dropped after the test."""
    import asyncpg

    dsn = await create_database(postgres_dsn)
    name = dsn.rsplit("/", 1)[1]
    yield dsn
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
