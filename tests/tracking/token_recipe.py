"""A recipe with tokens, for the tokens/s figure: the regression recipe, counting 7 tokens per sample."""

from dist_train.recipes.mlp_regression import MLPRegression

TOKENS_PER_SAMPLE = 7


class TokenCountingRegression(MLPRegression):
    def tokens_in(self, batch):
        return len(batch[0]) * TOKENS_PER_SAMPLE
