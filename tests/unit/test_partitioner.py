"""The remembered partition is the one kafka-python's default partitioner (and so the Java
client, and every site that keys by procedure id) picks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner, murmur2

from monitor.kafka.partitioner import MemoPartitioner


class FakeCluster:
    """The three ClusterMetadata calls the partitioners make."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.partitions.get(topic)
        return None if n is None else set(range(n))

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)


@given(key=st.binary(min_size=0, max_size=70), n=st.integers(1, 64))
def test_same_choice_as_the_default_partitioner(key: bytes, n: int) -> None:
    cluster = FakeCluster({"t": n})
    memo = MemoPartitioner()
    want = DefaultPartitioner().partition("t", key, key, b"v", b"v", cluster)
    assert want == (murmur2(key) & 0x7FFFFFFF) % n
    assert memo.partition("t", key, key, b"v", b"v", cluster) == want
    assert memo.partition("t", key, key, b"v", b"v", cluster) == want  # from the memo


def test_a_topic_that_grows_partitions_is_rehashed() -> None:
    key = b"LDN-GIB-0001"
    cluster = FakeCluster({"t": 6})
    memo = MemoPartitioner()
    assert memo.partition("t", key, key, None, None, cluster) == (murmur2(key) & 0x7FFFFFFF) % 6
    cluster.partitions["t"] = 7
    assert memo.partition("t", key, key, None, None, cluster) == (murmur2(key) & 0x7FFFFFFF) % 7


def test_memo_is_bounded() -> None:
    cluster = FakeCluster({"t": 6})
    memo = MemoPartitioner(memo_size=10)
    for i in range(25):
        k = f"P-{i}".encode()
        assert memo.partition("t", k, k, None, None, cluster) == (murmur2(k) & 0x7FFFFFFF) % 6
    assert len(memo._memo) <= 10


def test_unkeyed_and_unknown_topics_behave_as_the_default() -> None:
    cluster = FakeCluster({"t": 6})
    memo = MemoPartitioner()
    assert memo.partition("t", None, None, b"v", b"v", cluster) in range(6)  # random, like it
    with pytest.raises(ValueError, match="not found"):
        memo.partition("nope", b"k", b"k", b"v", b"v", cluster)
