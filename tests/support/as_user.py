"""Run a function as another user, in a forked child, for tests of what permission bits allow (root, which
the tests may run as, passes them all)."""

from __future__ import annotations

import os
from collections.abc import Callable


def run_as(uid: int, function: Callable[[], str]) -> str:
    """function()'s text from a forked child running as uid (and gid uid), or the exception it raised as
    'Name: message'. The parent's modules are already imported: the user need not read the virtualenv."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        try:
            os.close(read)
            os.setgid(uid)
            os.setuid(uid)
            try:
                text = function()
            except BaseException as error:
                text = f"{type(error).__name__}: {error}"
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    os.waitpid(child, 0)
    return text
