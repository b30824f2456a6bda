"""Every file and folder the pipeline reads or writes, defined once.

Two trees per stage (DVC outputs may not overlap):

- ``reports/<stage>/`` and ``reports/*.json``: small results (summaries, the tables
  behind the documentation, plot data, metrics). ``cache: false`` in ``dvc.yaml``, so
  they are committed to git and a fresh clone answers ``dvc metrics show``,
  ``dvc plots show`` and ``dvc metrics diff`` at once.
- ``artifacts/<stage>/`` and ``models/``: figures, raw records, logs, images and
  trained models, in the DVC cache and remote (``dvc pull``).

``dvc.yaml`` names the same paths; ``tests/test_dvc_deps.py`` checks that it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("profile", "build_env", "train", "evaluate", "testbed")
NOTEBOOKS = {
    "profile": "notebooks/01_profile.ipynb",
    "build_env": "notebooks/02_environment.ipynb",
    "train": "notebooks/03_train.ipynb",
    "evaluate": "notebooks/04_evaluate.ipynb",
    "testbed": "notebooks/05_testbed.ipynb",
}
"""The notebook each stage executes with papermill."""


@dataclass(frozen=True)
class StagePaths:
    """The outputs of one stage."""

    results: Path
    """Small results committed to git (``cache: false``)."""
    artifacts: Path
    """Figures, raw records and logs (DVC cache)."""
    metrics: Path
    """The stage's DVC metrics file (committed)."""
    notebook: Path
    """The executed notebook (DVC cache)."""

    @property
    def log(self) -> Path:
        return self.artifacts / "stage.log"


@dataclass(frozen=True)
class Paths:
    """The pipeline's files, relative to ``root`` (the repository root by default)."""

    root: Path = Path(".")

    def _stage(self, name: str, metrics: str) -> StagePaths:
        notebook = Path(NOTEBOOKS[name]).name
        return StagePaths(
            results=self.root / "reports" / name,
            artifacts=self.root / "artifacts" / name,
            metrics=self.root / "reports" / metrics,
            notebook=self.root / "artifacts" / "notebooks" / notebook,
        )

    @property
    def profile(self) -> StagePaths:
        return self._stage("profile", "profile_summary.json")

    @property
    def latency_source(self) -> Path:
        """The profile stage's decision, which the ``edge`` preset reads
        (``env.edge.profile_latency.stage_decision`` names the same file)."""
        return self.root / "reports" / "latency_source.json"

    @property
    def build_env(self) -> StagePaths:
        return self._stage("build_env", "env_summary.json")

    @property
    def train(self) -> StagePaths:
        return self._stage("train", "train_summary.json")

    @property
    def models(self) -> Path:
        """Trained agents: ``models/<preset>/<agent>/seed<seed>/``."""
        return self.root / "models"

    @property
    def evaluate(self) -> StagePaths:
        return self._stage("evaluate", "metrics.json")

    @property
    def slo_metrics(self) -> Path:
        """The evaluate stage's SLO sweep metrics (a second DVC metrics file)."""
        return self.root / "reports" / "slo_metrics.json"

    @property
    def generalisation_metrics(self) -> Path:
        """The evaluate stage's generalisation metrics (a third DVC metrics file)."""
        return self.root / "reports" / "generalisation_metrics.json"

    @property
    def optimum_metrics(self) -> Path:
        """The evaluate stage's gap-to-optimum metrics (a fourth DVC metrics file)."""
        return self.root / "reports" / "optimum_metrics.json"

    @property
    def scale_metrics(self) -> Path:
        """The evaluate stage's metrics at a thousand GPUs (a fifth DVC metrics file)."""
        return self.root / "reports" / "scale_metrics.json"

    @property
    def testbed(self) -> StagePaths:
        return self._stage("testbed", "testbed_metrics.json")

    def stage(self, name: str) -> StagePaths:
        if name not in STAGES:
            raise ValueError(f"stage {name!r} is not supported; choose one of {list(STAGES)}")
        return getattr(self, name)


def model_dir(models: Path, preset: str, agent: str, seed: int) -> Path:
    """The folder of one trained run: ``<models>/<preset>/<agent>/seed<seed>``."""
    return Path(models) / preset / agent / f"seed{seed}"
