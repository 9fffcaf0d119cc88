"""Plain-text rendering of combined weights and of what each collector did (`monitor weights`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from monitor.client.combine import CollectorReport, CombinedWeights
from monitor.exceptions import QuorumNotReached


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def render_weights(result: CombinedWeights) -> str:
    how = "unanimous" if result.unanimous else "per-endpoint median"
    lines = [
        f"chain {result.chain_id}, window {result.window}, as of {_time(result.as_of_ms)}: "
        f"{result.counted} of {len(result.collectors)} collectors counted "
        f"(quorum {result.quorum}), {how}",
        f"{'endpoint':>18}  {'operator':<24} {'weight':>8} {'bps':>6}",
    ]
    lines += [
        f"{w.endpoint_id:>18}  {w.operator_id:<24} {w.weight:>8.4f} {w.weight_bps:>6}"
        for w in result.weights
    ]
    lines.append(f"{'total':>18}  {'':<24} {'':>8} {result.total_bps:>6}")
    return "\n".join(lines)


def render_reports(reports: Sequence[CollectorReport]) -> str:
    width = max([len(r.url) for r in reports] + [9])
    lines = [f"{'collector':<{width}}  {'status':<9}  {'signer':<42}  {'as of':<24}  detail"]
    for r in reports:
        detail = f"{r.reason}: {r.detail}" if r.reason else r.detail
        lines.append(
            f"{r.url:<{width}}  {r.status:<9}  {r.signer or '-':<42}  "
            f"{_time(r.as_of_ms):<24}  {detail}"
        )
        for d in r.disagreements:
            said = "not listed" if d.weight_bps is None else f"{d.weight_bps} bps"
            lines.append(
                f"{'':<{width}}    endpoint {d.endpoint_id} ({d.operator_id}): {said}, "
                f"combined {d.combined_bps} bps"
            )
    return "\n".join(lines)


def weights_output(result: CombinedWeights, *, as_json: bool) -> str:
    """What `monitor weights` prints on success."""
    if as_json:
        return json.dumps(result.as_json(), indent=2)
    return render_weights(result) + "\n\n" + render_reports(result.collectors)


def failure_output(error: QuorumNotReached, *, as_json: bool) -> str:
    """What `monitor weights` prints (on stdout; the message goes to stderr) without a quorum."""
    reports = [r for r in error.reports if isinstance(r, CollectorReport)]
    if as_json:
        failure = {
            "error": {"code": error.code, "message": error.message},
            "collectors": [dataclasses.asdict(r) for r in reports],
        }
        return json.dumps(failure, indent=2)
    return render_reports(reports)
