"""monitor: health monitoring and SLA attestation for a decentralized RPC network."""
