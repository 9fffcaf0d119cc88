"""The client's own reconstruction of the signed weights (docs/signing.md) agrees with the
server's (monitor.signing.collector), and every alteration of an answer is caught."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_account import Account

from monitor.client import AnswerRejected, EndpointBps, typed_data, verify_answer
from monitor.signing.collector import WEIGHTS_TYPE_HASH, sign_weights, weights_typed_data

KEY = Account.from_key("0x" + "4c" * 32)
ENTRIES = [(7, "acme-rpc", 6_000), (8, "zeta-9", 4_000), (12, "slow-co", 0)]


def signed_answer(
    chain_id: int = 1, window: str = "5m", as_of_ms: int = 1_800_000_000_000
) -> dict[str, Any]:
    """A /v1/weights answer as the collector serves it, signed by the server's code."""
    signature = sign_weights(
        KEY, chain_id=chain_id, window=window, as_of_ms=as_of_ms, weights=ENTRIES
    )
    weights = [
        {
            "endpoint_id": e,
            "operator_id": o,
            "endpoint": "https://x",
            "weight": b / 1e4,
            "weight_bps": b,
        }
        for e, o, b in ENTRIES
    ]
    return {
        "chain_id": chain_id,
        "window": window,
        "as_of": "2027-01-15T08:00:00Z",
        "as_of_ms": as_of_ms,
        "total_bps": 10_000,
        "weights": weights,
        "signer": KEY.address,
        "signature": signature,
    }


def test_the_reconstruction_is_the_servers() -> None:
    entries = tuple(EndpointBps(*e) for e in ENTRIES)
    ours = typed_data(chain_id=1, window="5m", as_of_ms=1_800_000_000_000, weights=entries)
    theirs = weights_typed_data(
        chain_id=1, window="5m", as_of_ms=1_800_000_000_000, weights=ENTRIES
    )
    assert ours == theirs
    # The published type hash (docs/signing.md) is what the client's types encode.
    assert WEIGHTS_TYPE_HASH == "0x637a2773ceaba53779c2f675a85016b4e9171b2318acdd0ec6cc62e80fca4688"


def test_a_served_answer_recovers_to_its_collector() -> None:
    verified = verify_answer(signed_answer(), chain_id=1, window="5m")
    assert verified.signer == KEY.address
    assert verified.bps() == {7: 6_000, 8: 4_000, 12: 0}
    assert verify_answer(signed_answer(), chain_id=1, window=None).signer == KEY.address


def _altered(change: str) -> dict[str, Any]:
    body = signed_answer()
    match change:
        case "bps":
            body["weights"][0]["weight_bps"] -= 1_000
            body["weights"][1]["weight_bps"] += 1_000
        case "operator":
            body["weights"][2]["operator_id"] = "mallory"
        case "as_of":
            body["as_of_ms"] += 15_000
        case "window":
            body["window"] = "1h"
        case "dropped":
            del body["weights"][2]  # a 0 bps entry: the sum still holds
        case "signer_field":
            body["signer"] = Account.create().address  # informative only: changes nothing
    return body


@pytest.mark.parametrize("change", ["bps", "operator", "as_of", "window", "dropped"])
def test_every_alteration_recovers_to_another_address(change: str) -> None:
    verified = verify_answer(_altered(change), chain_id=1, window=None)
    assert verified.signer != KEY.address


def test_the_answers_own_signer_field_is_never_believed() -> None:
    assert verify_answer(_altered("signer_field"), chain_id=1, window=None).signer == KEY.address


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda b: b.update(chain_id=2), "wrong_chain"),
        (lambda b: b.update(window="1h"), "wrong_window"),
        (lambda b: b.update(signature="0x1234"), "bad_signature"),
        (lambda b: b.pop("signature"), "bad_signature"),
        (lambda b: b.update(as_of_ms=True), "malformed"),
        (lambda b: b.update(as_of_ms=-1), "malformed"),
        (lambda b: b.update(weights={}), "malformed"),
        (lambda b: b["weights"].reverse(), "malformed"),  # not ascending
        (lambda b: b["weights"].append(dict(b["weights"][-1])), "malformed"),  # repeated id
        (lambda b: b["weights"][0].update(weight_bps=6_001), "malformed"),  # sum 10001
        (lambda b: b["weights"][0].update(weight_bps=10_001), "malformed"),
        (lambda b: b["weights"][0].update(operator_id=""), "malformed"),
        (lambda b: b["weights"][0].pop("endpoint_id"), "malformed"),
    ],
)
def test_what_is_not_a_signed_answer_for_this_chain_is_rejected(mutate: Any, code: str) -> None:
    body = copy.deepcopy(signed_answer())
    mutate(body)
    with pytest.raises(AnswerRejected) as caught:
        verify_answer(body, chain_id=1, window="5m")
    assert caught.value.code == code
    with pytest.raises(AnswerRejected):
        verify_answer([body], chain_id=1, window="5m")
