"""One base for the mistakes a user can fix, and one exit-status rule for every entry point.

A :class:`UserError` (a flag value, a missing or unreadable file, a full disk, a broken sandbox)
is reported as one line on stderr, ``error: ...``, never with a traceback. :func:`run_cli`
gives every console script the same rule: exit status 2 when the mistake is found before work
starts (parsing, validation, the checks of inputs and outputs), 1 when it is found after; 0 on
success. Anything else is a bug and keeps its traceback.

Each entry point is written as two functions, ``prepare(argv) -> plan`` (nothing written yet)
and ``work(plan) -> status``, so where "before" ends is visible in the code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

Plan = TypeVar("Plan")

#: Exit status of a mistake found before any work (nothing was written).
BEFORE_WORK = 2
#: Exit status of a mistake found once work had started.
AFTER_WORK = 1


class UserError(Exception):
    """A mistake the user can fix; the message names the flag, file or values."""


def report(err: BaseException) -> None:
    """The one line a user sees: ``error: MESSAGE`` on stderr."""
    sys.stderr.write(f"error: {err}\n")


def run_cli(
    prepare: Callable[[], Plan],
    work: Callable[[Plan], int],
    user_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """``work(prepare())`` with the project's exit-status rule (see the module docstring).

    ``user_errors`` adds exception types this entry point also treats as the user's mistake
    (e.g. ``ValueError`` and ``FileNotFoundError`` raised by libraries on bad input)."""
    caught = (UserError, *user_errors)
    try:
        plan = prepare()
    except caught as err:
        report(err)
        return BEFORE_WORK
    try:
        return work(plan)
    except caught as err:
        report(err)
        return AFTER_WORK
