"""The ``train`` stage: every run of ``params.train`` (:mod:`eat.training.matrix`).

:func:`train` trains the runs into ``models/`` and returns the run table and the
validation curves; :func:`summarise` turns them into the stage's metrics; :func:`run`
writes the run table, the curves (CSV for ``dvc plots``), the phase and teacher tables,
the policies' agreement with their teacher (:func:`agreement_table`), what their
completion adds (:func:`completion_table`) and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pandas as pd

from eat.params import CompletionName, Params
from eat.schedulers.rl.agent import RLScheduler, load_actor, load_scheduler
from eat.stages.common import setup_logging, write_csv, write_json
from eat.stages.paths import Paths, model_dir
from eat.training.agreement import AGREEMENT_FIELDS, teacher_agreement
from eat.training.figures import phase_gains, phase_order, sac_curves, training_curves
from eat.training.loop import (
    CURVES_FILE,
    make_teacher,
    resolve_runs,
    teacher_validation,
    validation_scores,
)
from eat.training.matrix import train_matrix


@dataclass
class Training:
    """What :func:`train` returns."""

    runs: pd.DataFrame
    """One row per run: its summary (wall time, decisions, validation rewards)."""
    curves: pd.DataFrame
    """Every run's validation curve, with preset, agent and seed columns."""
    wall_s: float


def train(params: Params, models: Path, *, progress: bool = True) -> Training:
    """Train every run into ``models`` (``models/<preset>/<agent>/seed<seed>``)."""
    runs = train_matrix(params, models, progress=progress)
    curves = [
        pd.read_csv(
            model_dir(models, record["preset"], record["agent"], record["seed"]) / CURVES_FILE
        ).assign(**{key: record[key] for key in ("preset", "agent", "seed")})
        for record in runs.to_dict("records")
    ]
    return Training(runs, pd.concat(curves, ignore_index=True), runs.attrs["wall_s"])


COST_COLUMNS = ["run_name", "preset", "agent", "seed", "device", "cpu_capability", "wall_s"]
"""What a run cost on this machine (costs.csv): measurements, kept apart from the
results the seeds determine (runs.csv, the summary)."""


def teacher_scores(params: Params) -> pd.DataFrame:
    """Each preset's teacher on the validation episodes of its runs (one row a preset)."""
    rows = []
    seen: set[str] = set()
    for spec in resolve_runs(params):
        if spec.teacher is None or spec.preset_name in seen:
            continue
        seen.add(spec.preset_name)
        scores = teacher_validation(spec)
        rows.append(
            {
                "preset": spec.preset_name,
                "teacher": spec.teacher,
                **{key.split("/")[1]: value for key, value in scores.items()},
            }
        )
    return pd.DataFrame(rows, columns=["preset", "teacher", "reward", "latency", "quality"])


def agreement_table(params: Params, models: Path) -> pd.DataFrame:
    """``train.agreement``: each named agent's output policy of the first training seed
    against its teacher, decision by decision, on the run's validation episodes (one row
    per preset of ``train.presets`` and agent; :mod:`eat.training.agreement`)."""
    first_seed = params.seeds.train[0]
    rows = []
    for spec in resolve_runs(params, include_ablation=False):
        if (
            spec.agent not in params.train.agreement
            or spec.preset_name not in params.train.presets
            or spec.config.seed != first_seed
        ):
            continue
        teacher = make_teacher(spec)
        if teacher is None:
            continue
        learner = load_scheduler(model_dir(models, spec.preset_name, spec.agent, first_seed))
        agreement = teacher_agreement(
            spec.preset, learner, teacher, spec.rates, spec.validation_seeds
        )
        rows.append(
            {
                "preset": spec.preset_name,
                "agent": spec.agent,
                "seed": first_seed,
                "teacher": spec.teacher,
                **agreement,
            }
        )
    return pd.DataFrame(rows, columns=["preset", "agent", "seed", "teacher", *AGREEMENT_FIELDS])


COMPLETIONS: tuple[str, ...] = get_args(CompletionName)


def completion_table(params: Params, models: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """``train.agreement``: every output policy of each named agent (every training seed,
    every preset of ``train.presets``) on its run's validation episodes, completed as it
    was trained and with every other completion (``completion`` of
    :class:`~eat.params.SACConfig`): one row per run, ``<completion>_reward`` the mean
    validation reward with that completion. The reward as trained is the run's own
    ``val_reward`` (``runs``: the output policy's validation); the others are measured."""
    own_reward = runs.set_index(["preset", "agent", "seed"])["val_reward"]
    rows = []
    for spec in resolve_runs(params, include_ablation=False):
        if spec.agent not in params.train.agreement or spec.preset_name not in params.train.presets:
            continue
        actor, _ = load_actor(model_dir(models, spec.preset_name, spec.agent, spec.config.seed))
        row: dict[str, Any] = {
            "preset": spec.preset_name,
            "agent": spec.agent,
            "seed": spec.config.seed,
            "trained_with": spec.config.completion,
        }
        for completion in COMPLETIONS:
            if completion == spec.config.completion:
                reward = own_reward[(spec.preset_name, spec.agent, spec.config.seed)]
            else:
                scheduler = RLScheduler(actor, spec.agent, completion=completion)
                reward = validation_scores(
                    spec.preset, scheduler, spec.rates, spec.validation_seeds
                )["val/reward"]
            row[f"{completion}_reward"] = float(reward)
        rows.append(row)
    columns = ["preset", "agent", "seed", "trained_with", *(f"{c}_reward" for c in COMPLETIONS)]
    return pd.DataFrame(rows, columns=columns)


def phase_table(runs: pd.DataFrame, teachers: pd.DataFrame) -> pd.DataFrame:
    """What each training phase adds: one row per run and phase (``bc``, ``dagger<r>``,
    ``sac``: the best validation of SAC) with its validation reward, the teacher's on
    the same episodes, and the change from the phase before."""
    phase_columns = sorted(
        (c.removesuffix("_val_reward") for c in runs if c.endswith("_val_reward")),
        key=phase_order,
    )
    phase_columns = [p for p in phase_columns if p not in ("final",)]
    value_columns = [f"{p}_val_reward" for p in phase_columns]
    # melt only the phase columns: the run table's own ``val_reward`` would clash
    long = (
        runs[["preset", "agent", "seed", *value_columns]]
        .melt(
            id_vars=["preset", "agent", "seed"],
            value_vars=value_columns,
            var_name="phase",
            value_name="val_reward",
        )
        .dropna(subset=["val_reward"])
    )
    long["phase"] = long["phase"].str.removesuffix("_val_reward")
    long["order"] = long["phase"].map(phase_order)
    long = long.sort_values(["preset", "agent", "seed", "order"]).drop(columns="order")
    long["gain"] = long.groupby(["preset", "agent", "seed"])["val_reward"].diff()
    teacher = teachers.set_index("preset")["reward"] if len(teachers) else pd.Series(dtype=float)
    long["teacher_val_reward"] = long["preset"].map(teacher)
    return long.reset_index(drop=True)


def summarise(training: Training) -> dict[str, Any]:
    """The stage's metrics: per preset and agent, the mean over seeds (no wall times:
    those are measurements of the machine, in reports/train/costs.csv)."""
    runs = training.runs
    summary: dict[str, Any] = {"runs": len(runs)}
    for (preset, agent), frame in runs.groupby(["preset", "agent"]):
        summary[f"{preset}/{agent}"] = {
            "n_seeds": len(frame),
            "val_reward": float(frame["val_reward"].mean()),
            "val_latency": float(frame["val_latency"].mean()),
            "val_quality": float(frame["val_quality"].mean()),
            **{
                column: float(frame[column].mean()) if frame[column].notna().all() else None
                for column in frame
                if column.endswith("_val_reward") and column != "final_val_reward"
            },
        }
    return summary


def run(params: Params, paths: Paths, *, progress: bool = True) -> dict[str, Any]:
    """Train, then write the run table, curves, figures and the summary."""
    stage = paths.train
    setup_logging(stage.log)
    training = train(params, paths.models, progress=progress)
    # the shared demonstrations' wall time (SAC agents' runs) and each run's Ray node
    measured = [c for c in ("demonstrations_s", "node") if c in training.runs]
    costs = training.runs[COST_COLUMNS + measured].assign(matrix_wall_s=training.wall_s)
    write_csv(costs, stage.results / "costs.csv")
    write_csv(
        training.runs.drop(columns=["wall_s", "cpu_capability", *measured]),
        stage.results / "runs.csv",
    )
    write_csv(training.curves, stage.artifacts / "curves.csv")
    teachers = teacher_scores(params)
    write_csv(teachers, stage.results / "teacher.csv")
    phases = phase_table(training.runs, teachers)
    write_csv(phases, stage.results / "phases.csv")
    agreement = agreement_table(params, paths.models)
    write_csv(agreement, stage.results / "agreement.csv")
    completion = completion_table(params, paths.models, training.runs)
    write_csv(completion, stage.results / "completion.csv")
    for preset, frame in phases.groupby("preset"):
        phase_gains(frame, str(preset), path=stage.artifacts / f"{preset}_phases.png")
    for preset, frame in training.curves.groupby("preset"):
        for metric in ("val/reward", "val/latency"):
            wide = sac_curves(frame).pivot_table(
                index="global_step", columns="agent", values=metric
            )
            write_csv(
                wide.reset_index(),
                stage.results / "plots" / f"{preset}_{metric.split('/')[1]}_curve.csv",
            )
        training_curves(frame, str(preset), path=stage.artifacts / f"{preset}_training.png")
    summary = summarise(training)
    summary["teacher"] = {
        row["preset"]: {"teacher": row["teacher"], "val_reward": row["reward"]}
        for row in teachers.to_dict("records")
    }
    summary["agreement"] = {
        f"{row['preset']}/{row['agent']}": {
            field: None if pd.isna(row[field]) else row[field] for field in AGREEMENT_FIELDS
        }
        for row in agreement.to_dict("records")
    }
    summary["completion"] = {
        f"{preset}/{agent}": {
            "trained_with": frame["trained_with"].iloc[0],
            **{f"{c}_reward": float(frame[f"{c}_reward"].mean()) for c in COMPLETIONS},
        }
        for (preset, agent), frame in completion.groupby(["preset", "agent"], sort=False)
    }
    write_json(stage.metrics, summary)
    return summary
