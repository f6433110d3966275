"""The one exception type of the data layer."""
from __future__ import annotations


class DatasetError(RuntimeError):
    """A dataset that cannot be read as asked: a missing or unreadable shard, an empty
    split, an undecodable image, a label outside the class range, a bad manifest.

    The message names the dataset file (shard URL or manifest path) and, where there is
    one, the sample key. The constructor takes a single message so that PyTorch's
    DataLoader can re-raise it in the main process when a loader worker hits it.

    Args:
        message: what is wrong and, where possible, what to change.
        shard: the shard URL involved, if any (also part of the message).
        key: the sample key involved, if any (also part of the message).
    """

    def __init__(self, message: str, shard: str | None = None, key: str | None = None):
        super().__init__(message)
        self.shard = shard
        self.key = key
