"""trainer.startup: the time from the process start (or the launcher's) to the first step, in parts."""

from __future__ import annotations

import pytest

from trainer import startup
from trainer.startup import LAUNCH_START_ENV, StartupClock, compile_estimate


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime(1000.0)
    monkeypatch.setattr(startup, "process_start", lambda: 990.0)  # this process started 10 s ago
    monkeypatch.setattr(startup.time, "time", clock)
    monkeypatch.delenv(LAUNCH_START_ENV, raising=False)
    return clock


def test_laps_add_up_to_the_time_from_the_process_start(fake_time: FakeTime) -> None:
    clock = StartupClock()
    for part, seconds in [
        ("startup", 10.0),
        ("data", 2.5),
        ("engine", 4.0),
        ("resume", 0.5),
        ("first_step", 7.0),
    ]:
        fake_time.now += seconds - (10.0 if part == "startup" else 0.0)
        clock.lap(part)
    assert clock.report() == {
        "time_to_first_step_s": 24.0,
        "startup_s": 10.0,
        "data_s": 2.5,
        "engine_s": 4.0,
        "resume_s": 0.5,
        "first_step_s": 7.0,
    }


def test_under_launch_the_clock_starts_with_the_launcher(
    fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LAUNCH_START_ENV, "987.5")  # torchrun took 2.5 s to start this worker
    clock = StartupClock()
    clock.lap("startup")
    assert clock.report() == {"time_to_first_step_s": 12.5, "launch_s": 2.5, "startup_s": 10.0}


def test_timestamps_are_the_wall_clock_instants_in_order(
    fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LAUNCH_START_ENV, "987.5")
    clock = StartupClock()  # made at 1000: the imports are done
    fake_time.now = 1003.0
    clock.mark("rendezvous")
    fake_time.now = 1004.5
    clock.lap("startup")
    assert clock.timestamps() == {
        "launch": 987.5,
        "process": 990.0,
        "imported": 1000.0,
        "rendezvous": 1003.0,
        "startup": 1004.5,
    }
    assert clock.report() == {"time_to_first_step_s": 17.0, "launch_s": 2.5, "startup_s": 14.5}


def test_compile_estimate() -> None:
    assert compile_estimate(31.0, 1.0, compiled=True) == 30.0
    assert compile_estimate(0.8, 1.0, compiled=True) == 0.0  # never negative
    assert compile_estimate(31.0, 1.0, compiled=False) is None
    assert compile_estimate(None, 1.0, compiled=True) is None
