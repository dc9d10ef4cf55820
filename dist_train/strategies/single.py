"""One process, no wrapper: the model trains as written."""

from __future__ import annotations

from dist_train.strategies.base import TorchStrategy


class SingleStrategy(TorchStrategy):
    name = "single"
