"""The suite's own guards fire: a test that leaves a task behind fails, on the loop
pytest-asyncio gives it or on a loop of its own (clock.run, asyncio.run)."""

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

        def test_leaks_on_its_own_loop():
            async def main():
                asyncio.get_running_loop().create_task(asyncio.sleep(3600))

            asyncio.run(main())  # asyncio would cancel the task without a word

        def test_tidy_on_its_own_loop():
            async def main():
                task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

            asyncio.run(main())
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks *",
            "*left 1 task(s) running*",
            "*ERROR at teardown of test_leaks_on_its_own_loop*",
            "*left 1 task(s) unfinished on its own loop*",
        ]
    )
