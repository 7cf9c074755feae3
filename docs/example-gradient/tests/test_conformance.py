"""Run with the example installed: pytest docs/example-gradient/tests."""

from deqbench.testing import check_gradient


def test_the_estimator_conforms():
    check = check_gradient("damped-ift")
    assert check.cosine > 0.9  # points where the implicit gradient points
    assert check.b_nfe  # its backward solve is recorded: a report's b NFE


def test_tau_one_is_the_implicit_gradient():
    assert check_gradient("damped-ift", options={"tau": 1.0}).rel_error < 1e-6
