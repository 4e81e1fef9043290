"""Several training datasets mixed by weight: deterministic from the seed, resumable exactly."""
import json
from collections import Counter

import pytest

from neurosym.run.batches import BatchSource
from neurosym.config.schema import load_config
from neurosym.data import EpochSampler, Example, MixtureSampler, TrainSet, load_examples
from tests.support.jobs import arithmetic_rows, write_config, write_rows


def _mixture(seed=5):
    return MixtureSampler([(0, 10, 3.0, "a"), (10, 14, 1.0, "b")], seed)


def test_mixture_follows_weights_and_cycles_each_source():
    draws = _mixture().take(4000)
    share = sum(1 for i in draws if i < 10) / len(draws)
    assert 0.72 < share < 0.78  # weight 3:1
    a = [i for i in draws if i < 10]
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))  # epochs per source
    b = [i for i in draws if i >= 10]
    assert sorted(b[:4]) == [10, 11, 12, 13]
    assert _mixture().take(50) == draws[:50] and _mixture(seed=6).take(50) != draws[:50]


def test_mixture_state_round_trip_mid_epoch_gives_the_same_continuation():
    full = _mixture()
    reference = [full.take(7) for _ in range(9)]
    first = _mixture()
    head = [first.take(7) for _ in range(4)]  # mid-epoch of both sources
    state = json.loads(json.dumps(first.state_dict()))
    again = _mixture()
    again.load_state_dict(state)
    assert head + [again.take(7) for _ in range(5)] == reference
    with pytest.raises(ValueError, match="weight or run.seed changed"):
        MixtureSampler([(0, 10, 2.0, "a"), (10, 14, 1.0, "b")], 5).load_state_dict(state)
    with pytest.raises(ValueError, match="mixes several"):
        _mixture().load_state_dict(EpochSampler(14, 5).state_dict())


def _source(tmp_path, rows_a=6, rows_b=3):
    a = write_rows(tmp_path / "a.jsonl", arithmetic_rows(rows_a))
    b = write_rows(tmp_path / "b.jsonl", [{"conversations": [{"from": "human", "value": f"hi {i}"},
                                                              {"from": "gpt", "value": f"hello {i}"}]}
                                          for i in range(rows_b)])
    return a, b


def test_batch_source_mixes_a_train_list_and_resumes(tmp_path, tiny_model_dir):
    a, b = _source(tmp_path)
    cfg = load_config(write_config(tmp_path, tiny_model_dir, data={
        "train": [{"path": str(a), "weight": 2}, {"path": "b.jsonl", "weight": 1, "format": "sharegpt"}]}))
    train, report = load_examples(cfg.data.train, cfg.data)
    assert len(train) == 9 and [s["loaded"] for s in report.sources] == [6, 3]
    src = BatchSource(train, seed=3, per_step=4, mix_ratio=0.0)
    assert isinstance(src.sampler, MixtureSampler)
    ref = BatchSource(train, seed=3, per_step=4, mix_ratio=0.0)
    expected = [ref.next()[0] for _ in range(6)]
    got = [src.next()[0] for _ in range(2)]
    state = json.loads(json.dumps(src.state_dict()))
    resumed = BatchSource(train, seed=3, per_step=4, mix_ratio=0.0)
    resumed.load_state_dict(state, [])
    assert got + [resumed.next()[0] for _ in range(4)] == expected
    kinds = Counter(ex.meta["format"] for batch in expected for ex in batch)
    assert kinds["sharegpt"] > 0 and kinds["prompt_response"] > kinds["sharegpt"]


def test_a_single_path_keeps_the_plain_sampler(tmp_path):
    train = TrainSet([Example((("user", "q"),), "a")] * 3, [(0, 3, 1.0, "x")])
    assert isinstance(BatchSource(train, 0, 2, 0.0).sampler, EpochSampler)
    assert isinstance(BatchSource(list(train), 0, 2, 0.0).sampler, EpochSampler)


@pytest.mark.slow
def test_mixed_training_killed_and_resumed_is_exact(tmp_path, tiny_model_dir):
    from tests.test_resume import _assert_same, _final, _kill_at, _run
    train = {"max_steps": 14, "save_every": 3, "eval_every": 0, "batch_size": 4, "lr": 5e-3}
    a, b = _source(tmp_path, rows_a=12, rows_b=6)
    data = {"train": [{"path": str(a), "weight": 3}, {"path": str(b), "weight": 1}]}
    ref_cfg = write_config(tmp_path, tiny_model_dir, name="ref", train=train, data=data)
    _run("train", str(ref_cfg), "--quiet")
    reference = _final(tmp_path / "runs" / "ref")
    cfg = write_config(tmp_path, tiny_model_dir, name="killed", train=train, data=data)
    at, _ = _kill_at(cfg, tmp_path / "runs" / "killed", 8)
    assert at < 14
    _run("resume", str(tmp_path / "runs" / "killed"), "--quiet")
    _assert_same(reference, tmp_path / "runs" / "killed")
