"""``router.kind: function``: a router of the user's own, named 'module:factory' in the config, built
by the loop exactly as a registered one (the testbed's oracle is one)."""
import textwrap

import pytest

from neurosym.cli import main
from neurosym.config.schema import ConfigError, load_config
from neurosym.observe.events import read_events
from neurosym.train import train
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config
from tests.support.jobs import write_config

ROUTER_MODULE = """
from classifiers import Decision, Router

class EveryThird(Router):
    kind = "every_third"

    def _choose(self, signals, batch, index, available):
        route = "symbolic" if index % 3 == 2 and "symbolic" in available else self.default_route
        return Decision(route, reason=f"decision {index}", index=index, router=self.kind)

def make(cfg, seed, routes):
    return EveryThird(routes)

def not_a_router(cfg, seed, routes):
    return lambda *a: "lora"

def teach(messages, **params):
    return "Fine."
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_routers.py").write_text(textwrap.dedent(ROUTER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_routers"


def test_a_user_router_routes_the_job(tmp_path, tiny_model_dir, openai_server, monkeypatch, user_module):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, openai_server, train={"max_steps": 6, "save_every": 0},
                                    router={"kind": "function", "function": f"{user_module}:make"}))
    run = train(cfg, quiet=True).run_dir
    steps = [e for e in read_events(run / "events.jsonl") if e["kind"] == "train"]
    assert [e["route"] for e in steps] == ["lora", "lora", "symbolic"] * 2
    assert {e["decision"]["router"] for e in steps} == {"every_third"}
    assert steps[2]["decision"]["reason"] == "decision 2"


@pytest.mark.parametrize("router, words", [
    ({"kind": "function"}, ["router", "function", "module:factory"]),
    ({"kind": "alternate", "function": "my_routers:make"}, ["router", "kind: function"]),
    ({"kind": "nope"}, ["router.kind", "nope", "function"]),
])
def test_a_half_named_router_is_refused_at_load(tmp_path, tiny_model_dir, router, words):
    path = write_config(tmp_path, tiny_model_dir, router=router)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and all(w in str(err.value) for w in words), err.value


def test_a_router_module_that_is_not_there_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    # the model path does not exist: reaching it would be a different error
    path = write_config(tmp_path, tmp_path / "no-model-here",
                        router={"kind": "function", "function": "no_such_module_xyz:make"})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "router.function" in err and "no_such_module_xyz" in err and "no-model-here" not in err


def test_a_factory_that_returns_no_router_is_named(tmp_path, tiny_model_dir, user_module):
    path = write_config(tmp_path, tiny_model_dir, router={"kind": "function", "function": f"{user_module}:not_a_router"},
                        teacher={"provider": "python", "callable": f"{user_module}:teach"})
    with pytest.raises(TypeError, match="not_a_router.*not a classifiers.Router"):
        train(load_config(path), quiet=True)
