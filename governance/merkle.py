"""RFC 9162 Merkle tree hashes, computed incrementally (a stack of complete subtree roots)."""

from __future__ import annotations

import hashlib


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """Append leaves; ``root()`` is the RFC 9162 Merkle Tree Hash of the leaves so far."""

    def __init__(self) -> None:
        self.size = 0
        self._subtrees: list[tuple[int, bytes]] = []  # (leaf count, root), sizes strictly decreasing

    def append(self, data: bytes) -> None:
        self.size += 1
        self._subtrees.append((1, leaf_hash(data)))
        while len(self._subtrees) > 1 and self._subtrees[-1][0] == self._subtrees[-2][0]:
            (count, right), (_, left) = self._subtrees.pop(), self._subtrees.pop()
            self._subtrees.append((2 * count, node_hash(left, right)))

    def root(self) -> bytes:
        if not self._subtrees:
            return hashlib.sha256(b"").digest()
        root = self._subtrees[-1][1]
        for _, left in reversed(self._subtrees[:-1]):
            root = node_hash(left, root)
        return root
