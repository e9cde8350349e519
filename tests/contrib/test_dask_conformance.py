"""The runner conformance suite (``headwater.testing.RunnerConformance``) on
DaskTaskRunner, against an in-process LocalCluster. Its scheduler listens on TCP so the
suite's child processes (tasks defined in ``__main__``, Ctrl-C) can use it too."""

from __future__ import annotations

import pytest

distributed = pytest.importorskip("distributed")

from headwater.testing import RunnerConformance  # noqa: E402
from headwater_dask import DaskTaskRunner  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def dask_cluster():
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=4, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=":0") as cluster:
        yield cluster


class TestDaskRunner(RunnerConformance):
    # Each task run costs a few milliseconds on Dask (the scheduler's round trip), so
    # 10,000 would take most of a minute: the fan-out maps 1,000.
    fan_out_size = 1_000

    @pytest.fixture
    def task_runner(self, dask_cluster):
        return DaskTaskRunner(address=dask_cluster.scheduler_address)
