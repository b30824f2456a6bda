"""Event-driven simulator of edge-collaborative AIGC serving, and its Gymnasium env."""

from eat import ENV_ID
from eat.latency import GangTiming, PaperLatency, ProfileLatency
from eat.sim.encoding import Encoder
from eat.sim.env import EdgeClusterEnv
from eat.sim.quality import QualityCurve
from eat.sim.simulator import (
    RECORD_COLUMNS,
    SEGMENT_COLUMNS,
    Dispatch,
    Outcome,
    SimulationError,
    Simulator,
    episode_rngs,
    make_tasks,
)
from eat.sim.workload import Task, generate_tasks

__all__ = [
    "ENV_ID",
    "RECORD_COLUMNS",
    "SEGMENT_COLUMNS",
    "Dispatch",
    "EdgeClusterEnv",
    "Encoder",
    "GangTiming",
    "Outcome",
    "PaperLatency",
    "ProfileLatency",
    "QualityCurve",
    "SimulationError",
    "Simulator",
    "Task",
    "episode_rngs",
    "generate_tasks",
    "make_tasks",
]
