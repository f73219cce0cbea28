"""RFC 9162 Merkle tree hashes: computed incrementally (a stack of complete subtree roots), and
consistency proofs between two sizes of one tree (RFC 9162 section 2.1.4)."""

from __future__ import annotations

import hashlib
from typing import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


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
        self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, leaf: bytes) -> None:
        self.size += 1
        self._subtrees.append((1, leaf))
        while len(self._subtrees) > 1 and self._subtrees[-1][0] == self._subtrees[-2][0]:
            (count, right), (_, left) = self._subtrees.pop(), self._subtrees.pop()
            self._subtrees.append((2 * count, node_hash(left, right)))

    def root(self) -> bytes:
        if not self._subtrees:
            return EMPTY_ROOT
        root = self._subtrees[-1][1]
        for _, left in reversed(self._subtrees[:-1]):
            root = node_hash(left, root)
        return root


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    tree = MerkleTree()
    for leaf in leaf_hashes:
        tree.append_leaf_hash(leaf)
    return tree.root()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 section 2.1.4.1, for the tree of ``leaf_hashes`` and its first ``old_size``."""
    if not 0 <= old_size <= len(leaf_hashes):
        raise ValueError(f"old size {old_size} is outside 0..{len(leaf_hashes)}")
    if old_size == 0:
        return []

    def subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
        if m == len(leaves):
            return [] if complete else [root_of(leaves)]
        k = _split(len(leaves))
        if m <= k:
            return subproof(m, leaves[:k], complete) + [root_of(leaves[k:])]
        return subproof(m - k, leaves[k:], False) + [root_of(leaves[:k])]

    return subproof(old_size, leaf_hashes, True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: is the tree (new_size, new_root) an append-only extension of (old_size, old_root)?"""
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof and old_size & (old_size - 1):
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first, second = node_hash(node, first), node_hash(node, second)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            second = node_hash(second, node)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and first == old_root and second == new_root
