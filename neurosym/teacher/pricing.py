"""The teacher's price per 1k tokens: the config's, else the one LiteLLM's cost map knows.

The map is LiteLLM's public ``litellm.model_cost`` (``{model: {"input_cost_per_token": ...}}``),
read, never written; LiteLLM comes with TextGrad. LiteLLM fills it when it is imported: with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` (or ``LITELLM_OFFLINE_MODE=true``) in the environment from its
bundled copy, offline; otherwise it first tries to fetch a newer map from the network (a few seconds
of retries on a machine without one, then the bundled copy). neurosym never sets these variables (it
does not write the environment): export one for offline runs. TextGrad imports LiteLLM anyway, so
reading the map costs no import of its own once a teacher engine exists.

``resolve_price(cfg)`` returns a :class:`ResolvedPrice` saying where the price came from; a model
the map does not know (or no usable LiteLLM) is priced 0 and ``enforceable`` is False (a
``budget_usd`` then cannot bite, and :func:`resolve_price` logs a warning saying so).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger("neurosym.teacher")


@dataclass(frozen=True)
class ResolvedPrice:
    """USD per 1k prompt / completion tokens, and where they come from."""
    input: float
    output: float
    source: str          # "config", "litellm:<map key>", "local" or "unknown"
    enforceable: bool    # False: the model's price is unknown, so a budget cannot be enforced

    def describe(self) -> str:
        if self.source == "unknown":
            return "price unknown (cost counted as $0)"
        where = {"config": "teacher.price_per_1k_tokens", "local": "local model",
                 "python callable": "python callable"}.get(
            self.source, "LiteLLM cost map: " + self.source.split(":", 1)[-1])
        return f"${self.input:g} in / ${self.output:g} out per 1k tokens ({where})"


@functools.lru_cache(maxsize=1)
def _cost_map() -> dict:
    """``litellm.model_cost``, or {} when LiteLLM is missing or broken (prices are then unknown)."""
    try:
        import litellm
    except Exception as exc:  # noqa: BLE001 - an install without (a working) litellm: no prices
        log.warning("LiteLLM's cost map is unavailable (%s: %s); teacher prices are unknown unless "
                    "teacher.price_per_1k_tokens is set", type(exc).__name__, exc)
        return {}
    table = getattr(litellm, "model_cost", None)
    return table if isinstance(table, dict) else {}


def litellm_price(model: str) -> Optional[tuple[float, float, str]]:
    """(input, output USD per 1k tokens, map key) for ``model`` in LiteLLM's cost map, or
    ``None``. ``openai/gpt-4o-mini`` and ``gpt-4o-mini`` both find the ``gpt-4o-mini`` entry."""
    table = _cost_map()
    candidates = [model]
    if "/" in model:
        candidates.append(model.split("/", 1)[1])
    for key in candidates:
        entry = table.get(key)
        if not isinstance(entry, dict):
            continue
        pin, pout = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if isinstance(pin, (int, float)) and isinstance(pout, (int, float)) and pin >= 0 and pout >= 0:
            return float(pin) * 1000.0, float(pout) * 1000.0, key
    return None


def resolve_price(cfg, *, warn: bool = True) -> ResolvedPrice:
    """The price for ``cfg`` (the ``teacher`` section): ``price_per_1k_tokens`` when set (an unset
    half is 0), free for ``provider: local`` (and ``python`` without a budget), else LiteLLM's map, else 0
    and not enforceable."""
    p = cfg.price_per_1k_tokens
    if p.input is not None or p.output is not None:
        return ResolvedPrice(float(p.input or 0.0), float(p.output or 0.0), "config", True)
    if cfg.provider == "local":
        return ResolvedPrice(0.0, 0.0, "local", True)
    if cfg.provider == "python" and getattr(cfg, "budget_usd", None) is None:
        # an in-process callable has no list price; with no budget to enforce there is nothing to warn about
        return ResolvedPrice(0.0, 0.0, "python callable", True)
    found = litellm_price(cfg.model)
    if found is not None:
        return ResolvedPrice(found[0], found[1], f"litellm:{found[2]}", True)
    if warn:
        budget = getattr(cfg, "budget_usd", None)
        log.warning("teacher.model %r has no price in LiteLLM's cost map: its cost is counted as $0%s; set "
                    "teacher.price_per_1k_tokens {input: ..., output: ...} (USD per 1k tokens)", cfg.model,
                    f", so teacher.budget_usd={budget:g} cannot be enforced" if budget is not None else "")
    return ResolvedPrice(0.0, 0.0, "unknown", False)


__all__ = ["ResolvedPrice", "resolve_price", "litellm_price"]
