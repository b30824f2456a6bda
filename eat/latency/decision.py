"""The profile stage's decision (``reports/latency_source.json``): which measured profile
the ``edge`` preset's latency model uses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def read_stage_decision(path: str | Path | None) -> dict | None:
    """The ``latency_source.json`` the profile stage wrote, or None when ``path`` is None
    or the file does not exist (the pipeline has not profiled: the shipped profiles)."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    decision = json.loads(path.read_text())
    if decision.get("source") not in ("measured", "reference"):
        raise ValueError(f"{path}: source must be 'measured' or 'reference', got {decision!r}")
    if decision["source"] == "measured":
        for key in ("gpu", "profile", "profile_sha256"):
            if not decision.get(key):
                raise ValueError(f"{path}: a measured decision needs {key!r}")
        digest = file_sha256(decision["profile"])
        if digest != decision["profile_sha256"]:
            raise ValueError(
                f"{decision['profile']} changed after the profile stage chose it "
                f"(sha256 {digest} != {decision['profile_sha256']}); rerun the profile stage"
            )
    return decision


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
