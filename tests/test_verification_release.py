"""Verification checks what runs, not what the cluster lists: during a stuck rollout on
the Marathon simulator (real containers), an instance of another release is a failed
check naming it, and the checks go to instances of the release only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conveyor.drivers.marathon_app import render
from conveyor.verification import release_checks
from tests.marathon_support import Sim
from tests.test_marathon_driver import Images, make_driver
from tests.test_marathon_driver import images as images  # module fixtures, shared
from tests.test_marathon_driver import sim as sim

pytestmark = [pytest.mark.docker, pytest.mark.registry]


def test_an_instance_of_another_release_is_a_failed_check_naming_it(
    sim: Sim, images: Images, tmp_path: Path
) -> None:
    driver = make_driver(sim, tmp_path)
    try:
        deployed = driver.deploy(images.v1).state
        assert release_checks(deployed, images.v1) == []
        # A rollout to a release that never turns healthy, started behind the driver's
        # back: Marathon keeps v1's tasks and adds the new one beside them.
        app = render(driver._template, driver.app_id, images.sick)
        answer = sim.admin.put(f"/v2/apps{driver.app_id}", json=app, params={"force": "true"})
        assert answer.status_code in (200, 201), answer.text
        deadline = time.monotonic() + 30
        state = driver.status()
        while len({i.digest for i in state.instances}) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            state = driver.status()
        digests = {i.digest for i in state.instances}
        assert digests == {images.v1.digest, images.sick.digest}, state
        assert state.digest == images.sick.digest  # what the cluster lists as the app

        failed = release_checks(state, images.sick)
        old = [i for i in state.instances if i.digest == images.v1.digest]
        assert len(failed) == len(old) >= 1
        for check, instance in zip(failed, old, strict=True):
            assert not check.passed
            assert instance.url in check.detail and images.v1.digest in check.detail
            assert "not sick" in check.detail
    finally:
        sim.admin.delete(f"/v2/apps{driver.app_id}", params={"force": "true"})
        driver.close()
