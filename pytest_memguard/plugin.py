"""The ``pytest11`` entry point (``-p no:memguard`` turns it off). Thin: options, marker, lifecycle."""

from __future__ import annotations

import pytest

from .session import MARKER, MaxfailWatch, MemguardSession
from .settings import Settings, add_options

_SESSION = pytest.StashKey[MemguardSession]()
_PLUGIN_NAME = "memguard-session"
_MAXFAIL_NAME = "memguard-maxfail"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(peak=None, retained=None, heap_peak=None, heap_retained=None, fds=None): "
        "memory limits for a test (sizes like '50 MB' or '512 KiB'); a breach fails the test. "
        "A marked test is measured even without --memguard.",
    )
    session = MemguardSession(config, Settings.from_config(config))
    config.stash[_SESSION] = session
    config.pluginmanager.register(session, _PLUGIN_NAME)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """The --maxfail watch, if --maxfail is set once every plugin has configured."""
    config = session.config
    memguard = config.stash.get(_SESSION, None)
    maxfail = int(config.getoption("maxfail", 0) or 0)
    if memguard is not None and maxfail and not config.pluginmanager.has_plugin(_MAXFAIL_NAME):
        config.pluginmanager.register(MaxfailWatch(memguard), _MAXFAIL_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()
        del config.stash[_SESSION]
        config.pluginmanager.unregister(session)
        watch = config.pluginmanager.get_plugin(_MAXFAIL_NAME)
        if watch is not None:
            config.pluginmanager.unregister(watch)
