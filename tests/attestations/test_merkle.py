"""The evidence Merkle tree: sorted distinct leaves, commutative keccak pairs, odd node carried
up; proofs verify the way OpenZeppelin's MerkleProof does."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from monitor.attestations.merkle import (
    EMPTY_ROOT,
    hash_pair,
    hex_root,
    merkle_proof,
    merkle_root,
    verify_proof,
)


def leaf(n: int) -> bytes:
    return keccak(text=f"batch {n}")


def test_empty_and_single() -> None:
    assert merkle_root([]) == EMPTY_ROOT == bytes(32)
    assert hex_root([]) == "0x" + "00" * 32
    assert merkle_root([leaf(1)]) == leaf(1)
    assert merkle_proof([leaf(1)], leaf(1)) == []
    assert verify_proof(leaf(1), [], leaf(1))


def test_hand_computed_three_leaves() -> None:
    a, b, c = sorted([leaf(1), leaf(2), leaf(3)])
    # Level 1: (a, b) paired, c carried up unchanged; the root pairs them.
    ab = keccak(a + b)  # a < b
    root = keccak(ab + c) if ab < c else keccak(c + ab)
    assert merkle_root([c, a, b]) == root
    assert merkle_root([b, c, a, c, b]) == root  # distinct leaves, any order
    assert hex_root(["0x" + h.hex() for h in (a, b, c)]) == "0x" + root.hex()
    assert merkle_proof([a, b, c], a) == [b, c]
    assert merkle_proof([a, b, c], b) == [a, c]
    assert merkle_proof([a, b, c], c) == [ab]  # carried up at level 1: no sibling there


def test_pair_hashing_is_commutative() -> None:
    assert hash_pair(leaf(1), leaf(2)) == hash_pair(leaf(2), leaf(1))
    low, high = sorted([leaf(1), leaf(2)])
    assert hash_pair(high, low) == keccak(low + high)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 9, 16, 33])
def test_every_leaf_proves_and_nothing_else_does(n: int) -> None:
    leaves = [leaf(i) for i in range(n)]
    root = merkle_root(leaves)
    for one in leaves:
        proof = merkle_proof(leaves, one)
        assert verify_proof(one, proof, root)
        assert len(proof) <= (n - 1).bit_length()
        assert not verify_proof(leaf(999), proof, root)
        if proof:
            assert not verify_proof(one, proof[:-1], root)
    assert merkle_root(leaves[:-1]) != root
    assert merkle_root([*leaves, leaf(999)]) != root


def test_bad_leaves_are_refused() -> None:
    with pytest.raises(ValueError):
        merkle_root([b"short"])
    with pytest.raises(ValueError):
        merkle_proof([leaf(1), leaf(2)], leaf(3))
