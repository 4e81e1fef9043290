"""Routers: learning on a synthetic bandit, cost-awareness, availability, baselines, state."""
from __future__ import annotations

import json

import numpy as np
import pytest

from classifiers import ROUTERS, BatchStats, Decision, RewardRouter, make_router
from classifiers.base import BATCH_FEATURE_NAMES
from monitors.signals import FEATURE_NAMES, Signals
from neurosym.config.schema import RouterConfig

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon").split()


def signals(plateau: bool = False, available: bool = True, budget: float | None = None,
            reason: str | None = None, rng: np.random.Generator | None = None) -> Signals:
    rng = rng or np.random.default_rng(0)
    return Signals(
        step=int(rng.integers(0, 1000)), loss=float(rng.uniform(1, 3)), loss_ema=float(rng.uniform(1, 3)),
        slope=float(rng.normal(0, 0.01)), rel_slope=float(rng.normal(0, 0.005)),
        grad_norm=float(rng.uniform(0.5, 2)), grad_norm_ema=float(rng.uniform(0.5, 2)),
        grad_norm_z=float(rng.normal()), spike=False, plateau=plateau,
        steps_since_symbolic=int(rng.integers(0, 20)), prompt_version=int(rng.integers(0, 5)),
        symbolic_budget_left=budget, symbolic_available=available, symbolic_unavailable_reason=reason)


def batch(rng: np.random.Generator) -> BatchStats:
    return BatchStats(mean_loss=float(rng.uniform(1, 3)), max_loss=float(rng.uniform(3, 5)),
                      reward_before=float(rng.uniform()),
                      prompts=tuple(" ".join(rng.choice(WORDS, 8)) for _ in range(4)))


def bandit_gain(route: str, plateau: bool, rng: np.random.Generator) -> float:
    """Symbolic pays on a plateau, LoRA otherwise (noisy)."""
    return float(((route == "symbolic") == plateau) + rng.normal(0, 0.1))


def train(router: RewardRouter, n: int, rng: np.random.Generator, cost: float = 0.0) -> list[Decision]:
    decisions = []
    for _ in range(n):
        plateau = bool(rng.random() < 0.5)
        d = router.decide(signals(plateau, rng=rng), batch(rng))
        router.learn(d, bandit_gain(d.route, plateau, rng), cost if d.route == "symbolic" else 0.0)
        decisions.append(d)
    return decisions


def test_reward_router_learns_the_bandit():
    cfg = RouterConfig(kind="reward_classifier", warmup=4, epsilon=0.2, epsilon_decay=0.98, epsilon_min=0.02)
    router = make_router(cfg, seed=0)
    assert isinstance(router, RewardRouter)
    rng = np.random.default_rng(123)
    decisions = train(router, 300, rng)
    assert [d.route for d in decisions[:4]] == ["lora", "symbolic", "lora", "symbolic"]
    assert all(d.explored and d.reason.startswith("warm-up") for d in decisions[:4])
    assert decisions[-1].predicted is not None and set(decisions[-1].predicted) == {"lora", "symbolic"}
    # fresh contexts: the greedy choice is the paying route
    right = 0
    for _ in range(200):
        plateau = bool(rng.random() < 0.5)
        s, b = signals(plateau, rng=rng), batch(rng)
        right += router.greedy_route(router.features(s, b)) == ("symbolic" if plateau else "lora")
    assert right / 200 > 0.9
    # and decide() exploits it once epsilon has decayed
    assert router.epsilon == pytest.approx(0.02)
    late = decisions[-100:]
    assert sum(d.explored for d in late) <= 10


def test_exploration_decays_to_the_floor():
    cfg = RouterConfig(kind="reward_classifier", warmup=2, epsilon=0.5, epsilon_decay=0.9, epsilon_min=0.1)
    router = RewardRouter(cfg, seed=0)
    assert router.epsilon == 0.5
    train(router, 3, np.random.default_rng(0))  # 2 warm-up + 1 model decision
    assert router.epsilon == pytest.approx(0.45)
    train(router, 50, np.random.default_rng(1))
    assert router.epsilon == pytest.approx(0.1)


def test_huge_cost_weight_avoids_symbolic():
    cfg = RouterConfig(kind="reward_classifier", warmup=4, cost_weight=1e6, epsilon=0.1, epsilon_min=0.0)
    router = RewardRouter(cfg, seed=0)
    decisions = train(router, 150, np.random.default_rng(5), cost=0.01)
    assert router.expected_cost == pytest.approx(0.01)
    greedy = [d for d in decisions[4:] if not d.explored]
    assert greedy and all(d.route == "lora" for d in greedy)
    assert "cost" in greedy[-1].reason
    # the same run without a cost weight does route to symbolic when it pays
    free = RewardRouter(RouterConfig(kind="reward_classifier", warmup=4, cost_weight=0.0, epsilon=0.1,
                                     epsilon_min=0.0), seed=0)
    free_decisions = train(free, 150, np.random.default_rng(5), cost=0.01)
    assert sum(d.route == "symbolic" and not d.explored for d in free_decisions) > 30


@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_unavailable_symbolic_always_gives_lora_with_a_reason(kind):
    router = make_router(RouterConfig(kind=kind, every=1, random_p=1.0, warmup=0), seed=0)
    rng = np.random.default_rng(0)
    spent = [router.decide(signals(plateau=True, available=False, budget=0.0, rng=rng), batch(rng))
             for _ in range(10)]
    assert all(d.route == "lora" for d in spent)
    assert all(d.reason == "symbolic unavailable: budget spent" for d in spent)
    d = router.decide(signals(available=False, reason="teacher unreachable"), batch(rng))
    assert d.route == "lora" and d.reason == "symbolic unavailable: teacher unreachable"
    json.dumps(d.as_dict(), allow_nan=False)


def test_baselines_behave_as_specified():
    rng = np.random.default_rng(0)
    s, b = signals(), batch(rng)
    lora = make_router(RouterConfig(kind="always_lora"), 0)
    sym = make_router(RouterConfig(kind="always_symbolic"), 0)
    assert {lora.decide(s, b).route for _ in range(5)} == {"lora"}
    assert {sym.decide(s, b).route for _ in range(5)} == {"symbolic"}

    alt = make_router(RouterConfig(kind="alternate", every=3), 0)
    assert [alt.decide(s, b).route for _ in range(7)] == ["lora", "lora", "symbolic"] * 2 + ["lora"]

    plat = make_router(RouterConfig(kind="plateau"), 0)
    assert plat.decide(signals(plateau=True), b).route == "symbolic"
    assert plat.decide(signals(plateau=False), b).route == "lora"

    rnd = make_router(RouterConfig(kind="random", random_p=0.3), seed=7)
    routes = [rnd.decide(s, b).route for _ in range(2000)]
    assert 0.26 < routes.count("symbolic") / 2000 < 0.34
    same_seed = make_router(RouterConfig(kind="random", random_p=0.3), seed=7)
    assert [same_seed.decide(s, b).route for _ in range(2000)] == routes
    state = json.loads(json.dumps(rnd.state_dict()))
    clone = make_router(RouterConfig(kind="random", random_p=0.3), seed=0)
    clone.load_state_dict(state)
    assert [clone.decide(s, b).route for _ in range(50)] == [rnd.decide(s, b).route for _ in range(50)]


def _walk(obj):
    yield obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str)
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def test_reward_router_state_round_trip_is_exact():
    cfg = RouterConfig(kind="reward_classifier", warmup=4, epsilon=0.3, epsilon_decay=0.99)
    a = RewardRouter(cfg, seed=3)
    train(a, 60, np.random.default_rng(0), cost=0.002)
    text = json.dumps(a.state_dict(), allow_nan=False)
    for leaf in _walk(json.loads(text)):  # plain JSON types only: no bytes, arrays or pickles
        assert leaf is None or isinstance(leaf, (dict, list, str, int, float, bool))
    assert "pickle" not in text and "\\x" not in text
    b = RewardRouter(cfg, seed=999)  # a different seed: everything must come from the state
    b.load_state_dict(json.loads(text))
    assert json.dumps(b.state_dict()) == text
    # identical decisions, predictions and learning afterwards
    da = train(a, 80, np.random.default_rng(1), cost=0.002)
    db = train(b, 80, np.random.default_rng(1), cost=0.002)
    assert [d.as_dict() for d in da] == [d.as_dict() for d in db]
    assert [Decision.from_dict(json.loads(json.dumps(d.as_dict()))) for d in da] == da
    assert any(d.explored for d in da[-80:]) and len({d.route for d in da}) == 2
    assert json.dumps(a.state_dict()) == json.dumps(b.state_dict())
    x = a.features(signals(plateau=True), batch(np.random.default_rng(2)))
    assert a.predict(x) == b.predict(x)


def test_reward_router_is_reproducible_and_features_are_named():
    cfg = RouterConfig(kind="reward_classifier", hash_features=16)
    runs = [[d.as_dict() for d in train(RewardRouter(cfg, seed=11), 30, np.random.default_rng(4))]
            for _ in range(2)]
    assert runs[0] == runs[1]
    router = RewardRouter(cfg, seed=0)
    assert router.feature_names[:len(FEATURE_NAMES)] == FEATURE_NAMES
    assert len(router.feature_names) == len(FEATURE_NAMES) + len(BATCH_FEATURE_NAMES) + 16
    rng = np.random.default_rng(0)
    x = router.features(signals(rng=rng), batch(rng))
    assert x.shape == (router.n_features,)
    text = x[-16:]
    assert np.linalg.norm(text) > 0  # hashed prompt words are there
    no_prompts = router.features(signals(rng=np.random.default_rng(0)), BatchStats(1.0, 2.0, None, ()))
    assert not no_prompts[-16:].any()
    with pytest.raises(ValueError, match="features"):
        router.learn(Decision("lora", [1.0, 2.0]), 1.0, 0.0)


def test_router_state_refuses_another_kind():
    lora = make_router(RouterConfig(kind="always_lora"), 0)
    with pytest.raises(ValueError, match="kind"):
        lora.load_state_dict(make_router(RouterConfig(kind="plateau"), 0).state_dict())
