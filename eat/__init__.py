"""eat: QoS-aware edge-collaborative AIGC task scheduling (simulator, schedulers, pipeline)."""
