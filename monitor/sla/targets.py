"""An SLA subject's targets: the chain's SLA from the registry, with the operator's overrides."""

from __future__ import annotations

import json

from monitor.db.models import Chain, Operator
from monitor.registry.schema import SlaOverrides, SlaTargets
from monitor.sla.judge import SlaTargets as Targets
from monitor.sla.judge import ppm


def subject_targets(chain: Chain, operator: Operator) -> Targets:
    sla = SlaTargets.model_validate_json(chain.sla or "{}")
    if chain.sla in (None, "", "{}"):  # a chain stored before the SLA section was kept whole
        sla = SlaTargets(
            availability=chain.sla_availability,
            latency_p95_ms=chain.sla_latency_p95_ms,
            max_lag_blocks=chain.sla_max_lag_blocks,
        )
    overrides = json.loads(operator.sla or "{}").get(str(chain.chain_id))
    if overrides:
        own = SlaOverrides.model_validate(overrides)
        sla = sla.model_copy(update=own.model_dump(exclude_none=True))
    return Targets(
        availability_ppm=ppm(sla.availability),
        latency_p95_ms=round(sla.latency_p95_ms),
        max_lag_blocks=sla.max_lag_blocks,
        correctness_ppm=ppm(sla.correctness),
        min_probes=sla.min_probes,
        min_coverage_ppm=ppm(sla.min_coverage),
    )
