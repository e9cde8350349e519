"""The runner conformance suite (``headwater.testing.RunnerConformance``) on
RayTaskRunner, against a local Ray started once for the module. The runner reaches it by
its address, as the suite's child processes (tasks defined in ``__main__``, Ctrl-C) do."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from headwater.testing import RunnerConformance  # noqa: E402
from headwater_ray import RayTaskRunner  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


class TestRayRunner(RunnerConformance):
    # A task run costs a few milliseconds on a local Ray: the fan-out maps 1,000.
    fan_out_size = 1_000

    @pytest.fixture
    def task_runner(self, ray_address):
        return RayTaskRunner(address=ray_address)
