"""char_lm trained from a streaming source: the prepared shards read as a TokenShardStream (one stream shard per
shard file), validated on the map-style validation windows."""

from dist_train.data.streaming import TokenShardStream
from recipes.char_lm import CharLM


class StreamingCharLM(CharLM):
    def build_datasets(self):
        text = self._text()  # token shards: data.path is a prepared folder
        return TokenShardStream(self.config.data.path, text.train.seq_len), text.val
