"""The GPU catalogue: datasheet numbers of GPU types and the device names that identify
them (``eat/data/gpu_catalogue.csv``, every row with its source)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eat.data import data_path

CATALOGUE_COLUMNS = [
    "gpu",
    "name",
    "device_pattern",
    "architecture",
    "segment",
    "memory_gb",
    "fp16_tflops",
    "memory_bandwidth_gbs",
    "boost_clock_mhz",
    "sm_count",
    "tdp_w",
    "source",
]


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet numbers of one GPU type (one row of the catalogue)."""

    gpu: str
    name: str
    memory_gb: float
    fp16_tflops: float
    """Dense FP16 tensor-core throughput with FP32 accumulation (what PyTorch uses)."""
    memory_bandwidth_gbs: float
    boost_clock_mhz: float
    source: str


class GpuCatalogue:
    """GPU types with datasheet numbers, and the device names that identify them."""

    def __init__(self, frame: pd.DataFrame, path: str = "") -> None:
        missing = sorted(set(CATALOGUE_COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(f"GPU catalogue {path!r} lacks columns {missing}")
        if frame["gpu"].duplicated().any():
            raise ValueError(f"GPU catalogue {path!r} repeats gpu ids")
        if frame["source"].isna().any() or (frame["source"].str.strip() == "").any():
            raise ValueError(f"GPU catalogue {path!r}: every row must name its source")
        self.frame = frame.reset_index(drop=True)
        self.path = path
        self._specs = {
            str(row["gpu"]): GpuSpec(
                gpu=str(row["gpu"]),
                name=str(row["name"]),
                memory_gb=float(row["memory_gb"]),
                fp16_tflops=float(row["fp16_tflops"]),
                memory_bandwidth_gbs=float(row["memory_bandwidth_gbs"]),
                boost_clock_mhz=float(row["boost_clock_mhz"]),
                source=str(row["source"]),
            )
            for _, row in self.frame.iterrows()
        }

    @classmethod
    def load(cls, name: str | Path = "gpu_catalogue.csv") -> GpuCatalogue:
        return cls(pd.read_csv(data_path(name)), str(name))

    @property
    def gpus(self) -> list[str]:
        return self.frame["gpu"].tolist()

    def spec(self, gpu: str) -> GpuSpec:
        if gpu not in self._specs:
            raise ValueError(f"GPU type {gpu!r} is not in the catalogue; choose one of {self.gpus}")
        return self._specs[gpu]

    def match(self, device_name: str) -> str | None:
        """The catalogue id whose ``device_pattern`` (a regular expression) matches a
        device name as torch reports it (``NVIDIA H100 80GB HBM3`` -> ``h100``); None if
        none does. Two matches are an error in the catalogue."""
        found = [
            row.gpu
            for row in self.frame.itertuples(index=False)
            if re.search(row.device_pattern, device_name, flags=re.IGNORECASE)
        ]
        if len(found) > 1:
            raise ValueError(f"device {device_name!r} matches several catalogue rows: {found}")
        return found[0] if found else None
