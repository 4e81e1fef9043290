"""Each reward kind, and the errors a user sees when one is misconfigured."""
from __future__ import annotations

import pytest

from neurosym.config.schema import ConfigError, RewardConfig
from neurosym.reward import last_number, make_reward, normalize_text


def test_exact_match_normalises_whitespace_only():
    r = make_reward(RewardConfig(kind="exact_match"))
    assert r.needs_generation
    assert r("  Paris\n", "Paris") == 1.0
    assert r("New   York\tCity", "New York City") == 1.0
    assert r("paris", "Paris") == 0.0  # case matters
    assert r("Paris.", "Paris") == 0.0
    assert normalize_text(" a \n\n b ") == "a b"


def test_numeric_match_compares_the_last_numbers():
    r = make_reward(RewardConfig(kind="numeric_match"))
    assert r("First 3 apples, then 5 more: 8", "#### 8") == 1.0
    assert r("The answer is 8.0.", "8") == 1.0
    assert r("total: 1,234.50 dollars", "1234.5") == 1.0
    assert r("x = -3", "-3") == 1.0
    assert r("pages 3-4", "4") == 1.0  # a hyphen between numbers is not a minus sign
    assert r("8 then 9", "8") == 0.0  # the last number counts
    assert r("no idea", "8") == 0.0
    assert r("8", "none") == 0.0
    assert last_number("0.1 + 0.2 = 0.30000000000000004") == pytest.approx(0.3)
    assert r("0.30000000000000004", "0.3") == 1.0  # float noise is tolerated
    assert r("0.31", "0.3") == 0.0


def test_regex_with_a_group_compares_the_captures():
    r = make_reward(RewardConfig(kind="regex", pattern=r"Answer:\s*(\w+)"))
    assert r("Let me think. Answer: B", "Answer: B") == 1.0
    assert r("Answer:   C", "Answer: B") == 0.0
    assert r("Answer: B", "B") == 1.0  # a reference the pattern doesn't match is compared whole
    assert r("I think B", "Answer: B") == 0.0  # no match in the output


def test_regex_without_a_group_full_matches_the_output():
    r = make_reward(RewardConfig(kind="regex", pattern=r"(?:yes|no)"))  # non-capturing: no group
    assert r(" yes\n", "whatever") == 1.0
    assert r("yes, definitely", "yes") == 0.0  # a full match is required
    with pytest.raises(ConfigError, match="regular expression"):
        make_reward(RewardConfig(kind="regex", pattern="(unclosed"))


def test_function_reward_imports_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def overlap(output, reference):\n"
        "    a, b = set(output.split()), set(reference.split())\n"
        "    return len(a & b) / max(len(b), 1)\n"
        "def bad(output, reference):\n"
        "    return 'high'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = make_reward(RewardConfig(kind="function", function="my_rewards:overlap"))
    assert r.needs_generation
    assert r("the cat sat", "the cat ran away") == 0.5
    assert r.batch(["a b", "c"], ["a b", "d"]) == [1.0, 0.0]
    with pytest.raises(TypeError, match="must return a float"):
        make_reward(RewardConfig(kind="function", function="my_rewards:bad"))("x", "y")
    with pytest.raises(ConfigError, match="no attribute 'missing'"):
        make_reward(RewardConfig(kind="function", function="my_rewards:missing"))


def test_function_reward_found_through_search_paths(tmp_path):
    folder = tmp_path / "cfgdir"
    folder.mkdir()
    (folder / "near_config_reward.py").write_text("def score(o, r):\n    return float(o == r)\n")
    r = make_reward(RewardConfig(kind="function", function="near_config_reward:score"), search_paths=[folder])
    assert r("a", "a") == 1.0 and r("a", "b") == 0.0


def test_function_reward_that_cannot_be_imported_says_why():
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_module_xyz'.*PYTHONPATH"):
        make_reward(RewardConfig(kind="function", function="no_such_module_xyz:score"))


def test_function_reward_whose_module_raises(tmp_path, monkeypatch):
    (tmp_path / "broken_reward_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="RuntimeError: boom"):
        make_reward(RewardConfig(kind="function", function="broken_reward_mod:score"))


def test_neg_loss_needs_no_generation():
    r = make_reward(RewardConfig(kind="neg_loss"))
    assert r.needs_generation is False
    assert r.from_loss(2.5) == -2.5
    with pytest.raises(TypeError, match="from_loss"):
        r("output", "reference")
