"""The suite's own guards fire: a test that leaves a task behind fails."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


def test_a_test_that_leaves_a_task_running_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        test_leaky="""
        import asyncio

        async def test_leaks():
            asyncio.get_running_loop().create_task(asyncio.sleep(3600))

        async def test_tidy():
            task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        def test_sync():
            assert True
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*test_leaks*", "*left 1 task(s) running*"])
