"""The one exit-status rule of every entry point (``megatron_dscoder.errors.run_cli``): a user's
mistake is one line on stderr, status 2 before work starts and 1 after; anything else keeps its
traceback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from megatron_dscoder.errors import AFTER_WORK, BEFORE_WORK, UserError, run_cli


def _fail(err: BaseException) -> Callable[..., int]:
    def fail(*_: object) -> int:
        raise err

    return fail


def test_a_mistake_before_work_exits_2_and_after_work_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli(_fail(UserError("--input x: no such file")), lambda plan: 0) == BEFORE_WORK == 2
    assert capsys.readouterr().err == "error: --input x: no such file\n"
    assert run_cli(lambda: "plan", _fail(UserError("disk full"))) == AFTER_WORK == 1
    assert capsys.readouterr().err == "error: disk full\n"
    assert run_cli(lambda: 3, lambda plan: plan + 4) == 7


def test_only_declared_errors_are_the_users(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(lambda: 0, _fail(ValueError("bad value")), user_errors=(ValueError,)) == 1
    assert capsys.readouterr().err == "error: bad value\n"
    with pytest.raises(KeyError):  # a bug: its traceback is kept
        run_cli(lambda: 0, _fail(KeyError("bug")), user_errors=(ValueError,))
