"""The stop request: every wait of a run sleeps through it and ends once the run stops."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from target_userpilot.run.signals import RunStopped, StopRequest, WaitStopped


def test_a_signal_ends_a_main_thread_wait_with_its_number() -> None:
    stop = StopRequest()
    threading.Timer(0.05, stop.handle, args=(signal.SIGINT,)).start()
    started = time.monotonic()
    with pytest.raises(RunStopped) as stopped:
        stop.sleep(60)
    assert stopped.value.signum == signal.SIGINT
    assert time.monotonic() - started < 5, "noticed within a slice, not after 60 s"


def wait_on_a_thread(stop: StopRequest, seconds: float) -> list[BaseException]:
    ended: list[BaseException] = []

    def wait() -> None:
        try:
            stop.sleep(seconds)
        except WaitStopped as exc:
            ended.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return ended


def test_the_job_threads_waits_go_on_through_the_grace_and_end_when_abandoned() -> None:
    stop = StopRequest()
    stop.handle(signal.SIGTERM)
    assert wait_on_a_thread(stop, 0.05) == [], "one signal: the job in flight may complete"
    stop.handle(signal.SIGTERM)
    assert len(wait_on_a_thread(stop, 60)) == 1, "a second signal ends it"
    late = StopRequest()
    late.abandon()
    assert len(wait_on_a_thread(late, 60)) == 1, "the main thread gave up on it"
