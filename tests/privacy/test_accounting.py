"""The epsilon a private run states is Opacus's accountant's for the same (q, sigma, steps); the noise for a target
epsilon spends at most it; delta auto and a looser delta; a resumed budget that would overrun is refused."""

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from peftkit.errors import PrivacyError
from peftkit.privacy import Budget, epsilon_of, plan_privacy
from peftkit.recipe.schema import PrivacySpec


@pytest.mark.parametrize("mechanism, by_hand", [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_epsilon_equals_opacus_accountant_stepped_by_hand(mechanism, by_hand):
    rows, batch, steps, sigma = 1000, 20, 50, 1.1
    plan = plan_privacy(PrivacySpec(noise_multiplier=sigma, accountant=mechanism), rows=rows, expected_batch=batch,
                        steps=steps)
    hand = by_hand()
    for _ in range(steps):
        hand.step(noise_multiplier=sigma, sample_rate=batch / rows)
    expected = hand.get_epsilon(delta=1 / (2 * rows))
    assert plan.sample_rate == batch / rows and plan.delta == 1 / (2 * rows)
    assert plan.epsilon_at_end == pytest.approx(expected, rel=1e-9)
    budget = Budget(plan)
    for _ in range(steps):
        budget.step()
    assert budget.epsilon() == pytest.approx(expected, rel=1e-9)


def test_noise_for_a_target_spends_at_most_the_target():
    plan = plan_privacy(PrivacySpec(epsilon=8.0), rows=8000, expected_batch=32, steps=300)
    assert 7.9 <= plan.epsilon_at_end <= 8.0 and plan.noise_multiplier > 0
    assert epsilon_of("rdp", [(plan.noise_multiplier, 32 / 8000, 300)], 1 / 16000) == plan.epsilon_at_end


def test_budget_stops_before_the_step_that_would_exceed_the_target():
    plan = plan_privacy(PrivacySpec(epsilon=2.0), rows=100, expected_batch=10, steps=10)
    budget = Budget(plan)
    for _ in range(10):
        assert not budget.exhausted()
        budget.step()
    assert budget.epsilon() <= 2.0 and budget.exhausted()  # an 11th step would spend more


def test_delta_auto_stricter_and_looser():
    assert plan_privacy(PrivacySpec(noise_multiplier=1.0), rows=500, expected_batch=5, steps=3).delta == 1 / 1000
    stricter = plan_privacy(PrivacySpec(noise_multiplier=1.0, delta=1e-5), rows=500, expected_batch=5, steps=3)
    assert stricter.delta == 1e-5
    with pytest.raises(PrivacyError, match=r"delta 0.01: weaker than 1 / \(2 x 500 training rows\)"):
        plan_privacy(PrivacySpec(noise_multiplier=1.0, delta=0.01), rows=500, expected_batch=5, steps=3)


def test_refused_before_training_when_the_steps_would_exceed_the_target():
    spec = PrivacySpec(epsilon=3.0)
    first = plan_privacy(spec, rows=1000, expected_batch=50, steps=20)
    # resumed with more steps: the recorded 20 steps at the old noise plus 20 at the new exceed the target
    with pytest.raises(PrivacyError, match="40 steps would spend epsilon") as err:
        plan_privacy(spec, rows=1000, expected_batch=50, steps=40, history=[(first.noise_multiplier, 0.05, 20)])
    assert "\n" not in str(err.value)
    with pytest.raises(PrivacyError, match="expected batch"):
        plan_privacy(spec, rows=10, expected_batch=10, steps=5)


def test_budget_state_round_trips_through_json():
    import json

    plan = plan_privacy(PrivacySpec(noise_multiplier=0.9), rows=200, expected_batch=8, steps=12)
    a, b = Budget(plan), Budget(plan)
    for _ in range(5):
        a.step()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for budget in (a, b):
        for _ in range(7):
            budget.step()
    assert a.accountant.history == b.accountant.history == [(0.9, 0.04, 12)]
    assert a.epsilon() == b.epsilon() == plan.epsilon_at_end
