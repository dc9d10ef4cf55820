"""mlp_regression with a BatchNorm layer (Linear-BatchNorm1d-ReLU-Linear): a model with running statistics."""

from __future__ import annotations

from torch import nn

from recipes.mlp_regression import MLPRegression


class BatchNormRegression(MLPRegression):
    def build_model(self) -> nn.Module:
        d, m = self.config.section("dataset"), self.config.section("model")
        return nn.Sequential(nn.Linear(d.in_features, m.hidden), nn.BatchNorm1d(m.hidden), nn.ReLU(),
                             nn.Linear(m.hidden, d.out_features))
