"""Cost of a model call from `genai-prices` tables. Unknown price → None (shown as unknown),
never zero; the offline builtin model is free by definition."""

from __future__ import annotations

import functools
import logging
from decimal import Decimal
from typing import Any

logger = logging.getLogger("steward.engine")

_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic"}


def cost(provider: str, model: str, usage: dict[str, Any] | None) -> Decimal | None:
    if provider == "builtin":
        return Decimal(0)
    if not usage:
        return None
    return _price(
        provider,
        model,
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(usage.get("cached_tokens") or 0),
    )


@functools.lru_cache(maxsize=4096)
def _price(provider: str, model: str, prompt: int, completion: int, cached: int) -> Decimal | None:
    from genai_prices import Usage, calc_price  # its price tables load on first import: ~1 s

    try:
        result = calc_price(
            Usage(
                input_tokens=prompt,
                output_tokens=completion,
                cache_read_tokens=cached or None,
            ),
            model,
            provider_id=_PROVIDER_IDS.get(provider),
        )
    except LookupError:
        return None
    except Exception:  # noqa: BLE001 - a price table problem must not fail the execution
        logger.warning("could not price %s:%s", provider, model, exc_info=True)
        return None
    return Decimal(str(result.total_price)).quantize(Decimal("0.00000001"))
