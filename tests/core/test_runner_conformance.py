"""The runner conformance suite (``headwater.testing.RunnerConformance``) on the two
local runners: the sequential one and the thread pool."""

from __future__ import annotations

import pytest

from headwater.task_runners import SequentialTaskRunner, ThreadPoolTaskRunner
from headwater.testing import RunnerConformance


class TestSequentialRunner(RunnerConformance):
    @pytest.fixture
    def task_runner(self):
        return SequentialTaskRunner()


class TestThreadPoolRunner(RunnerConformance):
    @pytest.fixture
    def task_runner(self):
        return ThreadPoolTaskRunner(max_workers=4)
