"""Stopping between steps: the first SIGINT or SIGTERM ends the loop after its step, a second one acts at once."""

import signal
import threading

import pytest

from hyperbagel.errors import Interrupted
from hyperbagel.training.interrupt import graceful_stop


def _loop(stop, steps: int, signal_at: dict[int, int]) -> list[int]:
    """A training loop's skeleton: ``signal_at[k]`` is raised during step ``k`` (1-based); returns the steps done."""
    done = []
    for step in range(1, steps + 1):
        if step in signal_at:
            signal.raise_signal(signal_at[step])
        done.append(step)
        if stop.due(step):
            break
    return done


@pytest.fixture
def sigint_handler():
    """Sets SIGINT's handler for the test and gives the old one back. A process started in the background by a
    non-interactive shell (a CI runner's ``cmd &``) begins with SIGINT ignored, so a test cannot rely on
    inheriting Python's own."""
    before = signal.getsignal(signal.SIGINT)
    yield lambda handler: signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_loop_after_its_step_and_leaving_raises(signum, sigint_handler):
    sigint_handler(signal.default_int_handler)
    before = signal.getsignal(signum)
    done = []
    with pytest.raises(Interrupted) as err:
        with graceful_stop() as stop:
            done = _loop(stop, 10, {3: signum})
    assert done == [1, 2, 3]
    assert err.value.step == 3 and err.value.signum == signum
    assert err.value.exit_code == 128 + signum
    assert "resume" in str(err.value) and signal.Signals(signum).name in str(err.value)
    assert signal.getsignal(signum) is before  # the handlers are given back


def test_a_second_signal_acts_at_once(sigint_handler):
    sigint_handler(signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with graceful_stop() as stop:
            assert _loop(stop, 10, {2: signal.SIGINT}) == [1, 2]
            signal.raise_signal(signal.SIGINT)  # the second one is Python's own again


def test_the_second_signal_goes_to_the_handler_there_before(sigint_handler):
    seen = []
    sigint_handler(lambda signum, _frame: seen.append(signum))
    with pytest.raises(Interrupted):
        with graceful_stop() as stop:
            assert _loop(stop, 10, {2: signal.SIGINT}) == [1, 2]
            assert seen == []  # the first one was ours
            signal.raise_signal(signal.SIGINT)
            assert seen == [signal.SIGINT]


def test_without_a_signal_only_stop_after_ends_the_loop():
    with graceful_stop(stop_after=4) as stop:
        assert _loop(stop, 10, {}) == [1, 2, 3, 4]
    with graceful_stop() as stop:
        assert _loop(stop, 5, {}) == [1, 2, 3, 4, 5]


def test_a_signal_after_the_last_step_still_stops_what_follows():
    with pytest.raises(Interrupted) as err:
        with graceful_stop() as stop:
            _loop(stop, 3, {})
            signal.raise_signal(signal.SIGTERM)
    assert err.value.step == 3


def test_outside_the_main_thread_signals_are_left_alone():
    seen = {}

    def body():
        with graceful_stop(stop_after=1) as stop:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            seen["due"] = stop.due(1)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == {"handler": signal.getsignal(signal.SIGTERM), "due": True}


def test_an_ignored_signal_stays_ignored(sigint_handler):
    sigint_handler(signal.SIG_IGN)
    with graceful_stop() as stop:
        assert _loop(stop, 5, {2: signal.SIGINT}) == [1, 2, 3, 4, 5]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
