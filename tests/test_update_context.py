"""Updates see an ``UpdateContext``, never the ``Run``; what they change is applied by the run in one
place; one gain path serves updates done now and updates that land later: the reward "before" of an
asynchronous update is measured under the prompt it started from, before its new prompt applies."""
from __future__ import annotations

import textwrap

import pytest

from neurosym.config.schema import load_config
from neurosym.observe.events import read_events
from neurosym.run.gain import GainProbe
from neurosym.train import train
from neurosym.updates import UPDATES, UpdateContext
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config

ROUTER_MODULE = """
from classifiers import Decision, Router

class LearnsSymbolic(Router):
    '''Always the symbolic route when it is free; remembers every gain it is taught.'''
    kind = "learns_symbolic"
    learns_from_gain = True
    taught = []

    def _choose(self, signals, batch, index, available):
        route = "symbolic" if "symbolic" in available else self.default_route
        return Decision(route, reason="scripted", index=index, router=self.kind)

    def learn(self, decision, gain, cost_usd):
        LearnsSymbolic.taught.append((decision.index, gain))

def make(cfg, seed, routes):
    return LearnsSymbolic(routes)
"""


@pytest.fixture
def learning_router(tmp_path, monkeypatch):
    (tmp_path / "learning_router.py").write_text(textwrap.dedent(ROUTER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import sys
    sys.modules.pop("learning_router", None)
    module = importlib.import_module("learning_router")
    yield module.LearnsSymbolic
    sys.modules.pop("learning_router", None)


def test_an_async_update_is_measured_before_it_lands(tmp_path, tiny_model_dir, openai_server, monkeypatch,
                                                     learning_router):
    """Every step submits a symbolic update that lands one step later with a new prompt (the scripted
    teacher appends to it); no LoRA step runs, so only the prompt moves the reward. The router must be
    taught (reward under the new prompt) - (reward under the prompt the update started from)."""
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    measured = []  # (system prompt the renderer had, reward) of every gain measurement
    real = GainProbe.measure

    def spy(self, batch, version, with_losses=False):
        m = real(self, batch, version, with_losses)
        measured.append((self.ctx.renderer.system_prompt, m.reward))
        return m

    monkeypatch.setattr(GainProbe, "measure", spy)
    cfg = load_config(hybrid_config(
        tmp_path, tiny_model_dir, openai_server, router={"kind": "function", "function": "learning_router:make"},
        symbolic={"async": True, "max_inflight": 1, "land_after_steps": 1},
        reward={"kind": "numeric_match", "gain_from": "loss", "probe_size": 2, "gain_every": 100},
        data={"system_prompt": "Answer."}, train={"max_steps": 5, "save_every": 0, "eval_every": 0}))
    run = train(cfg, quiet=True).run_dir
    events = read_events(run / "events.jsonl")
    # no weight moved before the last landing (step 5: too close to the end for another symbolic update)
    assert [e["route"] for e in events if e["kind"] == "train"] == ["symbolic"] * 4 + ["lora"]
    landings = [e for e in events if e["kind"] == "symbolic"]
    prompts = [e["text"] for e in events if e["kind"] == "prompt"]
    assert len(landings) == 4 and len(prompts) == 5  # v0 + one new version per landing (steps 2 to 5)
    assert len(learning_router.taught) == 4
    # step 1's batch is measured before its update (the only step on the schedule, gain_every: 100); then
    # each landing twice: under the prompt it started from, then under its own new prompt
    assert measured[0][0] == prompts[0]
    pairs = [measured[i:i + 2] for i in range(1, len(measured), 2)]
    assert len(pairs) == 4
    for k, ((p_before, r_before), (p_after, r_after)) in enumerate(pairs):
        assert p_before == prompts[k] and p_after == prompts[k + 1]
        assert learning_router.taught[k][1] == pytest.approx(r_after - r_before)
        assert landings[k]["gain"] == pytest.approx(r_after - r_before)
    assert any(abs(g) > 1e-6 for _, g in learning_router.taught)  # the prompt really changed the loss


def test_an_update_is_built_with_the_context_not_the_run(tmp_path, tiny_model_dir, openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    built = []
    for name, kind in list(UPDATES.items()):
        real_init = kind.__init__

        def init(self, ctx, _real=real_init):
            built.append((type(self).__name__, ctx))
            _real(self, ctx)

        monkeypatch.setattr(kind, "__init__", init)
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, openai_server, train={"max_steps": 2, "save_every": 0}))
    train(cfg, quiet=True)
    assert sorted(n for n, _ in built) == ["LoraUpdate", "SymbolicUpdate"]
    for _, ctx in built:
        assert isinstance(ctx, UpdateContext) and not hasattr(ctx, "run")
        assert ctx.prompt() is None or isinstance(ctx.prompt(), str)
