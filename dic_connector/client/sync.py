"""The client without ``await``, for scripts and notebooks: :class:`Researcher`,
:class:`DataOwner` and :class:`Admin` whose methods block until the node answered.

The async client (:mod:`.researcher`, :mod:`.data_owner`, :mod:`.admin`) needs an event
loop, and a notebook already runs one (IPython/Jupyter's own), so ``asyncio.run`` cannot be
called there. Each object here therefore owns a private loop running in a daemon thread
(one thread per object): its ``aiohttp`` session is opened in that loop, every method hands
the async method's coroutine to it (``asyncio.run_coroutine_threadsafe``) and waits for the
answer, and :meth:`close` (or leaving the ``with`` block) closes the session and stops the
thread. It works the same from a plain script, from a notebook, and from inside a coroutine;
an interrupted call (Ctrl-C) cancels the coroutine in the loop.

The methods are not written out: each is the async method it names, wrapped by
:class:`Synced`, a descriptor typed with the async method's ``ParamSpec``, so a type checker
sees the same parameters and the awaited result type (``Researcher.submit(...) -> str``).
Every public coroutine method of the async class has its counterpart
(``tests/dic_connector/client/test_sync.py`` checks it), and what a method raises is what
the async one raises (:mod:`dic_connector.errors`).

One object is one person: :meth:`Researcher.from_profile` (a profile file or
:class:`~.profile.Profile`, see :mod:`.profile`), :func:`connect` (the role the profile
names), or ``Researcher.over(build)`` with a function building the async person over the
session the object opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import aiohttp

from dic_connector.client import admin as async_admin
from dic_connector.client import data_owner as async_data_owner
from dic_connector.client import researcher as async_researcher
from dic_connector.client.principal import Principal
from dic_connector.client.profile import Profile, load_profile, profile_path
from dic_connector.client.profile import connect as connect_async
from dic_connector.errors import ClientError, ConfigError
from dic_connector.vocabulary import Role

P = ParamSpec("P")
R = TypeVar("R")
#: The async person a facade drives (covariant: a researcher's facade is a principal's).
A = TypeVar("A", bound=Principal, covariant=True)
#: The async person a facade is built over.
B = TypeVar("B", bound=Principal)
#: How long closing waits for the session to close before the thread is left to die.
CLOSE_TIMEOUT_S = 10.0


async def _cancel_the_rest() -> None:
    """Cancel every other task of the running loop and wait until they end (a ``gather``
    that raised leaves its other calls running)."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


class _LoopThread:
    """An event loop running forever in a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, R], timeout_s: float | None = None) -> R:
        """Run ``coroutine`` in the loop and wait for it; cancelled there if the waiting
        is interrupted."""
        if self.in_loop():
            coroutine.close()
            raise ClientError("a synchronous client was called from its own event loop; "
                              "use the async client (dic_connector.client) there")
        if self.loop.is_closed():
            coroutine.close()
            raise ClientError("this client is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            future.cancel()
            raise

    def in_loop(self) -> bool:
        """Whether the caller runs in this loop's thread."""
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        """Cancel what still runs in the loop (as ``asyncio.run`` does on leaving), then
        stop it and its thread."""
        if not self.loop.is_closed():
            with contextlib.suppress(BaseException):
                self.run(_cancel_the_rest(), CLOSE_TIMEOUT_S)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CLOSE_TIMEOUT_S)
            if not self._thread.is_alive():
                self.loop.close()


def _shut(loop: _LoopThread, stack: contextlib.AsyncExitStack) -> None:
    """Cancel what still runs, close the session (leave ``stack``) and stop the thread."""
    if loop.in_loop():  # collected by the loop's own thread: finish there, then stop
        async def leave() -> None:
            try:
                await stack.aclose()
            finally:
                loop.loop.stop()
        loop.loop.create_task(leave())
        return
    if not loop.loop.is_closed():
        try:
            loop.run(_cancel_the_rest(), CLOSE_TIMEOUT_S)
            loop.run(stack.aclose(), CLOSE_TIMEOUT_S)
        finally:
            loop.stop()


class _Facade(Generic[A]):
    """A person of the async client, driven from a private loop (see the module)."""

    #: The async class this facade drives; also what a profile must yield.
    kind: ClassVar[type[Principal]] = Principal

    def __init__(self, opened: Callable[[], contextlib.AbstractAsyncContextManager[A]]
                 ) -> None:
        """Enter ``opened()`` (an async context manager yielding the person) in a new
        loop thread; it is left by :meth:`close`."""
        self._loop = _LoopThread(f"dic-client-{type(self).__name__.lower()}")
        self._stack = contextlib.AsyncExitStack()
        try:
            self._person: A = self._loop.run(self._enter(opened))
        except BaseException:
            self._loop.run(self._stack.aclose())
            self._loop.stop()
            raise
        self._finalizer = weakref.finalize(self, _shut, self._loop, self._stack)

    async def _enter(self, opened: Callable[[], contextlib.AbstractAsyncContextManager[A]]
                     ) -> A:
        person = await self._stack.enter_async_context(opened())
        if not isinstance(person, self.kind):
            raise ConfigError(f"{person.name} is a {type(person).__name__}, not a "
                              f"{self.kind.__name__}: use the matching class or connect()")
        return person

    @classmethod
    def from_profile(cls, profile: Profile | str | Path | None = None) -> Self:
        """The person of ``profile`` (a :class:`~.profile.Profile` or its file; default
        ``$DIC_PROFILE`` or ``~/.config/dic/profile.yaml``); :class:`ConfigError` if it
        is not of this class's role."""
        loaded = profile if isinstance(profile, Profile) else load_profile(
            profile_path(None if profile is None else Path(profile)))

        def opened() -> contextlib.AbstractAsyncContextManager[Any]:
            return connect_async(loaded)
        return cls(opened)

    @classmethod
    def over(cls, build: Callable[[aiohttp.ClientSession], Any],
             timeout_s: float = 60.0) -> Self:
        """The person ``build(session)`` makes over a session opened (and closed) by this
        object, e.g. ``Researcher.over(lambda s: aio.Researcher(name, key, [NodeClient(
        base_url=..., session=s, token=...) ...]))``."""
        @contextlib.asynccontextmanager
        async def opened() -> AsyncIterator[Any]:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
                yield build(session)
        return cls(opened)

    @property
    def name(self) -> str:
        return self._person.name

    @property
    def at(self) -> int:
        """The node this person talks to."""
        return self._person.at

    def __repr__(self) -> str:
        return f"sync.{self._person!r}"

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run a coroutine of this person's async client (:attr:`person`) in its loop."""
        return self._loop.run(coroutine)

    @property
    def person(self) -> A:
        """The async person; its coroutines must run in this object's loop (:meth:`run`)."""
        return self._person

    def close(self) -> None:
        """Close the session and stop the loop thread; idempotent. An object dropped
        without it is closed when collected, or at the interpreter's exit."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class Synced(Generic[B, P, R]):
    """The blocking form of one async method of the person a facade drives."""

    def __init__(self, method: Callable[Concatenate[B, P], Coroutine[Any, Any, R]]) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, facade: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, facade: _Facade[B], owner: type[Any]) -> Callable[P, R]: ...

    def __get__(self, facade: _Facade[B] | None, owner: type[Any]
                ) -> Self | Callable[P, R]:
        if facade is None:
            return self
        method = self.method

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return facade.run(method(facade.person, *args, **kwargs))
        return call


class _PrincipalFacade(_Facade[A]):
    """What every person does: datasets, requests, waiting for statuses."""

    datasets = Synced(Principal.datasets)
    requests = Synced(Principal.requests)
    status = Synced(Principal.status)
    wait = Synced(Principal.wait)


class Researcher(_PrincipalFacade[async_researcher.Researcher]):
    """:class:`dic_connector.client.Researcher`, blocking."""

    kind = async_researcher.Researcher

    create_study = Synced(async_researcher.Researcher.create_study)
    studies = Synced(async_researcher.Researcher.studies)
    submit = Synced(async_researcher.Researcher.submit)
    newest_version = Synced(async_researcher.Researcher.newest_version)
    catalogue = Synced(async_researcher.Researcher.catalogue)
    cancel = Synced(async_researcher.Researcher.cancel)
    result = Synced(async_researcher.Researcher.result)
    plot = Synced(async_researcher.Researcher.plot)


class DataOwner(_PrincipalFacade[async_data_owner.DataOwner]):
    """:class:`dic_connector.client.DataOwner`, blocking."""

    kind = async_data_owner.DataOwner

    approve = Synced(async_data_owner.DataOwner.approve)
    add_policy = Synced(async_data_owner.DataOwner.add_policy)
    policies = Synced(async_data_owner.DataOwner.policies)
    revoke_policy = Synced(async_data_owner.DataOwner.revoke_policy)
    delete_dataset = Synced(async_data_owner.DataOwner.delete_dataset)

    @property
    def site(self) -> str:
        return self.person.site


class Admin(_PrincipalFacade[async_admin.Admin]):
    """:class:`dic_connector.client.Admin`, blocking."""

    kind = async_admin.Admin

    verify_audit = Synced(async_admin.Admin.verify_audit)
    compare_audit = Synced(async_admin.Admin.compare_audit)
    audit_peers = Synced(async_admin.Admin.audit_peers)


def connect(profile: Profile | str | Path | None = None) -> Researcher | DataOwner | Admin:
    """The person of ``profile`` (as :meth:`Researcher.from_profile`), as the class of the
    role it names."""
    loaded = profile if isinstance(profile, Profile) else load_profile(
        profile_path(None if profile is None else Path(profile)))
    facade: type[Researcher | DataOwner | Admin] = {
        Role.RESEARCHER: Researcher, Role.DATA_OWNER: DataOwner}.get(loaded.role, Admin)
    return facade.from_profile(loaded)
