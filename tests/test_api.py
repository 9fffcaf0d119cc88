"""The collector's read API over real loopback HTTP, on SQLite and on PostgreSQL: health,
/v1/targets authentication, /v1/operators, /v1/scores and /v1/weights, and the JSON error shape
{"error": {"code", "message"}} on every refusal."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, event, select, update

from monitor.app import create_app
from monitor.db.models import Chain, Endpoint
from monitor.db.session import make_engine, session_scope
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.scoring.answers import AnswerCache
from monitor.scoring.job import run_scoring
from monitor.scoring.schemas import ScoresOut, WeightsOut
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.eip712 import auth_headers, sign_batch
from tests.conftest import Network, make_settings
from tests.support.results import answered

TIMEOUT = 10.0
TARGETS = "/v1/targets"
SECRET_URL = "https://user:s3cret@rpc.example.com:8545/v3/KEY123?apikey=zzz"
SECRET_IPV6_URL = "http://user:s3cret@[::1]:8545/v3/KEY123?apikey=zzz"


# --- helpers ------------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def get(url: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{url}{path}", timeout=TIMEOUT, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message"} <= set(error), body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return error


def targets(url: str, account: LocalAccount, **kwargs: Any) -> httpx.Response:
    return get(url, TARGETS, headers=auth_headers(account, method="GET", path=TARGETS, **kwargs))


def endpoint_ids(engine: Engine) -> dict[str, int]:
    """operator id -> its endpoint id (one endpoint each in the demo network)."""
    with session_scope(engine) as session:
        rows = session.execute(select(Endpoint.operator_id, Endpoint.id)).all()
    return {operator_id: endpoint_id for operator_id, endpoint_id in rows}


def deliver_rounds(url: str, engine: Engine, network: Network, *, rounds: int = 3) -> None:
    """Each probe delivers ``rounds`` rounds in one batch: alpha healthy, bravo lagging,
    charlie on another fork (wrong hash), delta slow. No simnet traffic: the results are made
    up, so the scores are exactly predictable."""
    ids = endpoint_ids(engine)
    chain_id = network.chain_id
    good, bad = "0x" + "aa" * 32, "0x" + "bb" * 32
    start = now_ms() - 30_000
    for account in network.probes:
        results = []
        for i in range(rounds):
            at = start + i * 1_000
            head = 5_000 + i
            for operator_id, latency_us, lag, block_hash, correct, error in [
                ("alpha", 20_000, 0, good, True, None),
                ("bravo", 25_000, 4, good, True, None),
                ("charlie", 20_000, 0, bad, False, "wrong_hash"),
                ("delta", 320_000, 0, good, True, None),
            ]:
                results.append(
                    answered(
                        endpoint_id=ids[operator_id],
                        operator_id=operator_id,
                        chain_id=chain_id,
                        observed_at_ms=at,
                        error=error,
                        latency_us=latency_us,
                        head=head,
                        lag=lag,
                        block_hash=block_hash,
                        correct=correct,
                    )
                )
        body = sign_batch(account, results).model_dump_json()
        response = httpx.post(
            f"{url}/v1/batches",
            content=body,
            timeout=TIMEOUT,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- health, docs, unknown routes ---------------------------------------------------------------


def test_health_docs_and_unknown_routes(collector: ServerThread) -> None:
    url = collector.url
    health = get(url, "/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = get(url, "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

    docs = get(url, "/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    openapi = get(url, "/openapi.json")
    assert openapi.status_code == 200
    paths = openapi.json()["paths"]
    for path in (
        "/healthz",
        "/readyz",
        "/v1/batches",
        TARGETS,
        "/v1/operators",
        "/v1/operators/{operator_id}",
        "/v1/scores",
        "/v1/weights",
    ):
        assert path in paths, path

    assert_error(get(url, "/no/such/route"), 404, "not_found")
    assert_error(get(url, "/v1"), 404, "not_found")
    assert_error(httpx.put(f"{url}/v1/batches", timeout=TIMEOUT), 405, "method_not_allowed")
    assert_error(httpx.delete(f"{url}/v1/operators", timeout=TIMEOUT), 405, "method_not_allowed")


@pytest.fixture
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'no-such-directory' / 'monitor.db'}"
    return f"postgresql+psycopg://monitor@127.0.0.1:{closed_port()}/monitor?connect_timeout=2"


@pytest.mark.parametrize("unreachable_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("own_engine", [True, False], ids=["engine_given", "engine_made"])
def test_readyz_503_when_database_unreachable(unreachable_url: str, own_engine: bool) -> None:
    engine = make_engine(unreachable_url) if own_engine else None
    app = create_app(make_settings(unreachable_url), engine=engine, scoring=False)
    try:
        with ServerThread(app, name="collector-no-db", lifespan="on") as server:
            assert_error(get(server.url, "/readyz"), 503, "database_unreachable")
            # The process itself is up.
            assert get(server.url, "/healthz").status_code == 200
            # Requests that need the database: a 503 to retry, never a 500.
            assert_error(get(server.url, "/v1/operators"), 503, "database_unavailable")
            batch = sign_batch(Account.create(), [])  # verified before the database is needed
            response = httpx.post(
                f"{server.url}/v1/batches",
                content=batch.model_dump_json(),
                headers={"content-type": "application/json"},
                timeout=TIMEOUT,
            )
            assert_error(response, 503, "database_unavailable")
    finally:
        if engine is not None:
            engine.dispose()


# --- /v1/targets --------------------------------------------------------------------------------


def test_targets_requires_a_registered_probe(
    collector: ServerThread, network: Network, engine: Engine, tmp_path: Path
) -> None:
    url = collector.url
    probe = network.probes[0]

    assert_error(get(url, TARGETS), 401, "bad_signature")
    assert_error(targets(url, Account.create()), 403, "unknown_probe")

    response = targets(url, probe)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["chain_id"] for c in body["chains"]] == [network.chain_id]
    chain = body["chains"][0]
    assert chain["block_time_s"] == 1.0
    assert chain["confirmations"] == 3
    ids = endpoint_ids(engine)
    # Full URLs (path included) for probes, in endpoint id order.
    assert chain["endpoints"] == [
        {"endpoint_id": ids[o], "operator_id": o, "url": f"{network.sim.url}/{o}", "archive": False}
        for o in sorted(ids, key=ids.__getitem__)
    ]

    # Stale or future timestamps, correctly signed: 422 clock_skew (either direction).
    assert_error(targets(url, probe, now_ms=now_ms() - 10 * 60_000), 422, "clock_skew")
    assert_error(targets(url, probe, now_ms=now_ms() + 10 * 60_000), 422, "clock_skew")
    assert targets(url, probe, now_ms=now_ms() - 60_000).status_code == 200  # within 300 s

    # Signed for another path or method, or by someone else: 401.
    for headers in (
        auth_headers(probe, method="GET", path="/v1/operators"),
        auth_headers(probe, method="POST", path=TARGETS),
        {
            **auth_headers(network.probes[1], method="GET", path=TARGETS),
            "X-Monitor-Probe": probe.address,
        },
        {**auth_headers(probe, method="GET", path=TARGETS), "X-Monitor-Signature": "0x00"},
        {**auth_headers(probe, method="GET", path=TARGETS), "X-Monitor-Timestamp": "soon"},
        {**auth_headers(probe, method="GET", path=TARGETS), "X-Monitor-Probe": "nobody"},
    ):
        assert_error(get(url, TARGETS, headers=headers), 401, "bad_signature")

    # Lower-case header names and an all-lowercase address are fine.
    headers = {k.lower(): v for k, v in auth_headers(probe, method="GET", path=TARGETS).items()}
    headers["x-monitor-probe"] = probe.address.lower()
    assert get(url, TARGETS, headers=headers).status_code == 200

    # A deactivated probe is refused.
    document = yaml.safe_load(network.registry_file.read_text())
    document["probes"] = [p for p in document["probes"] if p["address"] != probe.address]
    without = tmp_path / "without-probe.yaml"
    without.write_text(yaml.safe_dump(document, sort_keys=False))
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(without))
    error = assert_error(targets(url, probe), 403, "unknown_probe")
    assert "deactivated" in error["message"]
    assert targets(url, network.probes[1]).status_code == 200


# --- /v1/operators ------------------------------------------------------------------------------


def test_operators_before_scoring(collector: ServerThread, network: Network) -> None:
    url = collector.url
    response = get(url, "/v1/operators")
    assert response.status_code == 200, response.text
    operators = response.json()
    assert [o["id"] for o in operators] == ["alpha", "bravo", "charlie", "delta", "echo"]
    for operator in operators:
        assert operator["active"] is True
        [endpoint] = operator["endpoints"]
        assert endpoint["chain_id"] == network.chain_id
        assert endpoint["endpoint"] == network.sim.url  # scheme://host:port only
        assert endpoint["active"] is True
        assert (endpoint["status"], endpoint["score"], endpoint["weight"], endpoint["reasons"]) == (
            "unscored",
            None,
            None,
            [],
        )
    # The path (here the operator id; in real registries often an API key) is never shown.
    assert f"{network.sim.url}/" not in response.text

    one = get(url, "/v1/operators/bravo")
    assert one.status_code == 200
    assert one.json() == operators[1]

    assert_error(get(url, "/v1/operators/nobody"), 404, "unknown_operator")
    assert_error(get(url, "/v1/operators/ALPHA"), 404, "unknown_operator")


def test_secret_urls_are_only_served_to_probes(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    document = yaml.safe_load(network.registry_file.read_text())
    document["operators"].append(
        {
            "id": "foxtrot",
            "name": "Echo",
            "endpoints": [
                {"chain_id": network.chain_id, "url": SECRET_URL},
                {"chain_id": network.chain_id, "url": SECRET_IPV6_URL},
            ],
        }
    )
    extended = tmp_path / "with-foxtrot.yaml"
    extended.write_text(yaml.safe_dump(document, sort_keys=False))
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(extended))
    run_scoring(engine, settings)

    url = collector.url
    public = [
        get(url, "/v1/operators"),
        get(url, "/v1/operators/foxtrot"),
        get(url, "/v1/scores", params={"chain_id": network.chain_id}),
        get(url, "/v1/weights", params={"chain_id": network.chain_id}),
    ]
    for response in public:
        assert response.status_code == 200, response.text
        for secret in ("s3cret", "user", "KEY123", "apikey", "/v3"):
            assert secret not in response.text, (response.url, secret)
    # scheme://host[:port], IPv6 hosts in brackets.
    shown = sorted(["https://rpc.example.com:8545", "http://[::1]:8545"])
    assert sorted(e["endpoint"] for e in public[1].json()["endpoints"]) == shown
    echo = [s for s in public[2].json()["scores"] if s["operator_id"] == "foxtrot"]
    assert sorted(s["endpoint"] for s in echo) == shown
    echo_weights = [w for w in public[3].json()["weights"] if w["operator_id"] == "foxtrot"]
    assert sorted(w["endpoint"] for w in echo_weights) == shown

    # Probes get the full URLs, secrets and all.
    served = targets(url, network.probes[0]).json()
    urls = [e["url"] for c in served["chains"] for e in c["endpoints"]]
    assert SECRET_URL in urls and SECRET_IPV6_URL in urls


# --- scores and weights -------------------------------------------------------------------------


def test_scores_weights_and_statuses_after_scoring(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    url = collector.url
    chain = {"chain_id": network.chain_id}
    assert_error(get(url, "/v1/scores", params=chain), 503, "scores_not_ready")
    assert_error(get(url, "/v1/weights", params=chain), 503, "scores_not_ready")

    deliver_rounds(url, engine, network)
    # Delivered but not scored yet: still unscored.
    assert {e["status"] for o in get(url, "/v1/operators").json() for e in o["endpoints"]} == {
        "unscored"
    }
    run_scoring(engine, settings)

    scores = get(url, "/v1/scores", params=chain)
    assert scores.status_code == 200, scores.text
    body = scores.json()
    assert (body["chain_id"], body["window"]) == (network.chain_id, settings.windows[0])
    by_operator = {s["operator_id"]: s for s in body["scores"]}
    assert sorted(by_operator) == ["alpha", "bravo", "charlie", "delta", "echo"]
    for s in body["scores"]:
        assert s["endpoint"] == network.sim.url
        expected = (0, 0) if s["operator_id"] == "echo" else (9, 3)  # no results for echo
        assert (s["samples"], s["probes"]) == expected
    # No result in the window: too few probes and too few samples, never a last good score.
    assert by_operator["echo"]["reasons"] == ["insufficient_probes", "insufficient_samples"]
    assert by_operator["echo"]["score"] is None
    assert by_operator["charlie"]["status"] == "excluded"
    assert {"incorrect", "wrong_hash"} <= set(by_operator["charlie"]["reasons"])
    assert by_operator["charlie"]["weight"] == 0 and by_operator["charlie"]["weight_bps"] == 0
    for ok in ("alpha", "bravo", "delta"):
        assert by_operator[ok]["status"] == "ok", by_operator[ok]
        assert by_operator[ok]["weight"] > 0
    assert by_operator["alpha"]["score"] > by_operator["bravo"]["score"]
    assert by_operator["alpha"]["score"] > by_operator["delta"]["score"]
    assert by_operator["bravo"]["lag_blocks"] == 4
    assert by_operator["delta"]["latency_p95_ms"] == pytest.approx(320)
    # Explained: each factor's value, sub-score, weight and share of what the score lost.
    bravo = by_operator["bravo"]["factors"]
    assert set(bravo) == {"availability", "latency", "lag", "correctness", "freshness"}
    assert bravo["lag"]["value"] == 4 and bravo["lag"]["sub_score"] == pytest.approx(0.25)
    assert bravo["lag"]["weight"] == 1.0
    assert sum(f["share"] for f in bravo.values()) == pytest.approx(1.0)
    assert bravo["lag"]["share"] > 0.9  # lag is what costs bravo its traffic
    assert by_operator["bravo"]["status_since"] is not None

    probes = get(url, "/v1/probes", params=chain)
    assert probes.status_code == 200, probes.text
    agreement = probes.json()["probes"]
    assert sorted(p["address"] for p in agreement) == sorted(a.address for a in network.probes)
    # Three probes that saw the same: nobody disagrees.
    assert all((p["endpoints"], p["outlier_score"]) == (4, 0.0) for p in agreement), agreement
    assert_error(get(url, "/v1/probes", params={"chain_id": 999}), 404, "unknown_chain")

    longer = get(url, "/v1/scores", params={**chain, "window": "1h"})
    assert longer.status_code == 200, longer.text
    assert longer.json()["window"] == "1h"

    weights = get(url, "/v1/weights", params=chain)
    assert weights.status_code == 200, weights.text
    w = weights.json()
    assert w["total_bps"] == 10_000
    assert sum(e["weight_bps"] for e in w["weights"]) == 10_000
    assert sum(e["weight"] for e in w["weights"]) == pytest.approx(1.0, abs=1e-9)
    assert all(e["weight_bps"] >= 0 and 0 <= e["weight"] <= 1 for e in w["weights"])
    for e in w["weights"]:
        assert abs(e["weight_bps"] - e["weight"] * 10_000) <= 1, e
        assert e["endpoint"] == network.sim.url
        assert e["weight_bps"] == by_operator[e["operator_id"]]["weight_bps"]
    assert {e["operator_id"]: e["weight_bps"] for e in w["weights"]}["charlie"] == 0

    operators = {o["id"]: o for o in get(url, "/v1/operators").json()}
    statuses = {o: operators[o]["endpoints"][0]["status"] for o in operators}
    assert statuses == {
        "alpha": "ok",
        "bravo": "ok",
        "charlie": "excluded",
        "delta": "ok",
        "echo": "excluded",
    }
    charlie = get(url, "/v1/operators/charlie").json()["endpoints"][0]
    assert "incorrect" in charlie["reasons"] and charlie["weight"] == 0
    alpha = operators["alpha"]["endpoints"][0]
    assert alpha["score"] == pytest.approx(by_operator["alpha"]["score"])
    assert alpha["weight"] == pytest.approx(by_operator["alpha"]["weight"])


def test_scores_and_weights_refusals(collector: ServerThread, network: Network) -> None:
    url = collector.url
    for path in ("/v1/scores", "/v1/weights"):
        assert_error(get(url, path, params={"chain_id": 999}), 404, "unknown_chain")
        assert_error(get(url, path, params={"chain_id": network.chain_id}), 503, "scores_not_ready")
        assert_error(get(url, path), 422, "invalid_request")  # chain_id is required
        assert_error(get(url, path, params={"chain_id": 2**63 - 1}), 404, "unknown_chain")
        # Not a positive int64 (the largest used to reach the database and answer 500).
        for bad in ("abc", "0", "-1", "1.5", "", "0x539", "1e3", str(2**63), str(10**30)):
            assert_error(get(url, path, params={"chain_id": bad}), 422, "invalid_request")

    for path in ("/v1/scores", "/v1/weights"):
        for window in ("7d", "5", "forever", "1H"):
            params = {"chain_id": network.chain_id, "window": window}
            assert_error(get(url, path, params=params), 400, "unknown_window")
        # The window is checked before the chain.
        assert_error(
            get(url, path, params={"chain_id": 999, "window": "7d"}), 400, "unknown_window"
        )


def test_scores_and_weights_are_served_from_memory_per_run(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    """Answers are kept as bytes per scoring run (monitor.scoring.answers): served with no query
    while fresh, identical when rebuilt, renewed at once by this process's own changes and within
    the TTL by another process's."""
    url = collector.url
    chain = {"chain_id": network.chain_id}
    answers: AnswerCache = collector.app.state.answers
    deliver_rounds(url, engine, network)
    run_scoring(engine, settings)

    first = {p: get(url, p, params=chain) for p in ("/v1/scores", "/v1/weights")}
    for path, response in first.items():
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        schema = ScoresOut if path == "/v1/scores" else WeightsOut
        assert schema.model_validate_json(response.content).model_dump(mode="json") == (
            response.json()
        )
    assert len(answers) == 2

    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    answers.ttl_s = 60.0
    event.listen(engine, "before_cursor_execute", count)
    try:
        for path, response in first.items():  # fresh: from memory, no query at all
            assert get(url, path, params=chain).content == response.content
        assert statements == []
        answers.ttl_s = 0.0  # checked on every request: one query, the same bytes
        for path, response in first.items():
            assert get(url, path, params=chain).content == response.content
        assert len(statements) == 2, statements
    finally:
        event.remove(engine, "before_cursor_execute", count)
    answers.clear()  # rebuilt from the database: byte for byte the same answers
    for path, response in first.items():
        assert get(url, path, params=chain).content == response.content

    # This process's scoring run shows at once, whatever the TTL.
    answers.ttl_s = 60.0
    get(url, "/v1/weights", params=chain)
    run_scoring(engine, settings)
    newer = get(url, "/v1/weights", params=chain).json()
    assert newer["as_of_ms"] > first["/v1/weights"].json()["as_of_ms"]

    # Another process's change (no ORM session here) shows once the TTL has passed.
    with engine.begin() as connection:
        connection.execute(
            update(Chain).where(Chain.chain_id == network.chain_id).values(active=False)
        )
    assert get(url, "/v1/weights", params=chain).json() == newer  # within the TTL
    answers.ttl_s = 0.0
    for path in first:
        assert_error(get(url, path, params=chain), 404, "unknown_chain")

    # This process's registry change shows at once.
    answers.ttl_s = 60.0
    with session_scope(engine) as session:
        session.get_one(Chain, network.chain_id).active = True
    assert get(url, "/v1/weights", params=chain).json() == newer
    with session_scope(engine) as session:
        session.get_one(Chain, network.chain_id).active = False
    for path in first:
        assert_error(get(url, path, params=chain), 404, "unknown_chain")


def test_a_run_replaced_while_it_is_read_is_never_served(
    collector: ServerThread,
    network: Network,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scoring job replaces the runs it replays: a run deleted between reading the latest
    run's id and reading its scores is read again, never a 500 nor empty signed weights."""
    from monitor.scoring import views

    deliver_rounds(collector.url, engine, network)
    run_scoring(engine, settings)
    real = views.latest_run_token
    calls: list[int] = []

    def vanishing(session: Any, *, chain_id: int, window_s: int) -> tuple[bool, int] | None:
        token = real(session, chain_id=chain_id, window_s=window_s)
        calls.append(1)
        if token is not None and len(calls) == 1:
            return token[0], token[1] + 1_000  # a run that is gone by the time it is read
        return token

    monkeypatch.setattr(views, "latest_run_token", vanishing)
    collector.app.state.answers.clear()
    response = get(collector.url, "/v1/weights", params={"chain_id": network.chain_id})
    assert response.status_code == 200, response.text
    assert response.json()["total_bps"] == 10_000 and len(calls) == 2
