"""The Merkle tree an attestation commits to its evidence with (docs/attestations.md).

* Leaves: the **distinct** batch hashes (32 bytes each: keccak256 of a batch body's exact
  bytes), sorted ascending.
* A level is paired left to right; a parent is ``keccak256(min(a, b) ++ max(a, b))``
  (commutative pair hashing, as OpenZeppelin's ``MerkleProof.verify`` expects); an odd node at
  the end of a level is carried up unchanged.
* The root of one leaf is that leaf; the root of no leaves is 32 zero bytes.

A proof is the list of siblings from the leaf up (levels where the node was carried up add none);
:func:`verify_proof` folds it the way ``MerkleProof.processProof`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eth_utils import keccak

EMPTY_ROOT = bytes(32)


def _check(leaf: bytes) -> bytes:
    if not isinstance(leaf, bytes | bytearray) or len(leaf) != 32:
        raise ValueError("a Merkle leaf is 32 bytes")
    return bytes(leaf)


def hash_pair(a: bytes, b: bytes) -> bytes:
    """``keccak256(min(a, b) ++ max(a, b))``: the order of the two children does not matter."""
    return keccak(a + b) if a <= b else keccak(b + a)


def leaves_of(hashes: Iterable[bytes]) -> list[bytes]:
    """The tree's leaves: distinct, sorted ascending."""
    return sorted({_check(h) for h in hashes})


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        parents = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            parents.append(level[-1])  # the odd node is carried up unchanged
        levels.append(parents)
    return levels


def merkle_root(hashes: Iterable[bytes]) -> bytes:
    leaves = leaves_of(hashes)
    if not leaves:
        return EMPTY_ROOT
    return _levels(leaves)[-1][0]


def merkle_proof(hashes: Iterable[bytes], leaf: bytes) -> list[bytes]:
    """The siblings of ``leaf`` from the bottom up; ValueError if it is not a leaf."""
    leaves = leaves_of(hashes)
    leaf = _check(leaf)
    if leaf not in leaves:
        raise ValueError("not a leaf of this tree")
    index = leaves.index(leaf)
    proof = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(leaf: bytes, proof: Iterable[bytes], root: bytes) -> bool:
    node = _check(leaf)
    for sibling in proof:
        node = hash_pair(node, _check(sibling))
    return node == root


def hex_root(hashes: Iterable[str]) -> str:
    """:func:`merkle_root` of ``0x`` hex hashes, as ``0x`` hex (lowercase)."""
    return "0x" + merkle_root(bytes.fromhex(h.removeprefix("0x")) for h in hashes).hex()
