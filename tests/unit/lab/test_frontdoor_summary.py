"""The citizens' loop summary (controlplane/lab/frontdoor.py): the front-door lab tests judge
silences and slow requests from it, so its arithmetic is checked here on made-up samples."""
from controlplane.lab.frontdoor import Loop


def test_the_longest_silence_ends_with_the_answer_that_broke_it_and_slow_requests_are_listed():
    loop = Loop("10.77.0.102", "curl")
    # sent at 0.0, 0.2 (hangs 9 s), 9.4 (fails), 9.6: answers at 0.01, 9.2, -, 9.61
    loop.samples = [(100.0, 0.01, 200, True), (100.2, 9.0, 200, True),
                    (109.4, 0.02, 0, False), (109.6, 0.01, 200, True)]
    r = loop.summary(100.0, 110.0)
    assert r["silent_s"] == 9.19 and r["silent_until"] == 9.2
    assert r["slow"] == [[0.2, 9.0]]
    assert r["failed"] == 1 and r["failed_at"] == [[9.4, 0]] and r["timeouts"] == 0
    assert r["timed_out_at"] == []


def test_a_loop_with_no_answer_is_silent_from_start_to_end():
    loop = Loop("10.77.0.101", "requests")
    loop.samples = [(100.0, 15.0, 0, False)]
    r = loop.summary(100.0, 116.0)
    assert r["silent_s"] == 16.0 and r["silent_until"] == 16.0
    assert r["timeouts"] == 1 and r["slow"] == [[0.0, 15.0]] and r["timed_out_at"] == [0.0]
