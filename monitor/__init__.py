"""monitor: health monitoring and SLA attestation for a decentralized RPC network."""

__version__ = "0.1.0"
