from target_userpilot.jobs import OVERDUE_MAX, PollPlan, RateEstimate


def test_first_job_polls_soon_then_backs_off() -> None:
    plan = PollPlan(max_interval=30)
    delays = [plan.delay(0, None, n) for n in range(20)]
    assert delays[0] <= 0.1
    assert delays == sorted(delays)
    assert delays[-1] == 30


def test_known_rate_polls_sparsely_then_densely_near_the_end() -> None:
    plan = PollPlan(max_interval=30)
    expected = 500.0  # a 10,000-row job at 1,200 rows/min
    assert plan.delay(0, expected, 0) == 30  # far from the end: capped sparse polls
    assert plan.delay(480, expected, 0) == 10  # halving the distance
    near = plan.delay(499.5, expected, 0)
    assert near <= 1.0  # noticed within a second
    assert plan.delay(600, expected, 20) == OVERDUE_MAX


def test_short_jobs_get_short_dense_polls() -> None:
    plan = PollPlan()
    assert plan.delay(4.99, 5.0, 0) <= 0.025


def test_rate_estimate_learns() -> None:
    rate = RateEstimate()
    assert rate.expected_seconds(100) is None
    rate.learn(1000, 50)
    assert rate.expected_seconds(100) == 5
    rate.learn(0, 10)
    assert rate.expected_seconds(100) == 5
