"""Circuit breaker state machine, with a fake clock."""

from tuneroute_router.circuit import Circuit


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_opens_after_threshold_and_lets_one_trial_through_after_cooldown():
    clock = Clock()
    c = Circuit(threshold=3, cooldown=10, clock=clock)
    assert [c.failure() for _ in range(3)] == [False, False, True]
    assert c.state == "open" and not c.allow()
    clock.t = 9.9
    assert not c.allow()
    clock.t = 10
    assert c.state == "half-open" and c.allow()
    assert not c.allow()  # only one trial at a time
    c.success()
    assert c.state == "closed" and c.allow() and c.failures == 0


def test_failed_trial_reopens_for_a_full_cooldown():
    clock = Clock()
    c = Circuit(threshold=1, cooldown=5, clock=clock)
    c.failure()
    clock.t = 5
    assert c.allow()
    assert c.failure() is True
    clock.t = 9
    assert c.state == "open" and not c.allow()
    clock.t = 10
    assert c.allow()


def test_success_resets_the_consecutive_count():
    c = Circuit(threshold=2, cooldown=1, clock=Clock())
    c.failure()
    c.success()
    assert c.failure() is False and c.state == "closed"
