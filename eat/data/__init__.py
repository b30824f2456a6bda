"""Files shipped with the package: measured latency profiles, the GPU catalogue and the
architecture table (``PROVENANCE.md`` says where each comes from)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(name: str | Path) -> Path:
    """Resolve a file shipped in ``eat/data`` (or return ``name`` if it is a real path)."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    shipped = Path(str(resources.files("eat") / "data" / str(name)))
    if not shipped.is_file():
        raise FileNotFoundError(f"{str(name)!r} is neither a file nor in eat/data")
    return shipped
