"""The sim-to-real comparison: per task, per scheduler, and per step against the profile."""

from __future__ import annotations

import pandas as pd


def compare(real: pd.DataFrame, simulated: pd.DataFrame) -> pd.DataFrame:
    """Per task: the real record beside the simulated one (same task id)."""
    columns = ["task_id", "latency", "waiting", "service", "steps", "gang_size", "cold_starts"]
    merged = real.merge(
        simulated[columns], on="task_id", suffixes=("", "_sim"), validate="one_to_one"
    )
    merged["latency_ratio"] = merged["latency"] / merged["latency_sim"]
    merged["service_prediction_ratio"] = merged["service"] / merged["predicted_service"]
    return merged


def summarise(comparison: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, frame in comparison.groupby("scheduler", sort=False):
        same = frame["steps"].eq(frame["steps_sim"]) & frame["gang_size"].eq(frame["gang_size_sim"])
        rows.append(
            {
                "scheduler": name,
                "tasks": len(frame),
                "real_latency_mean": frame["latency"].mean(),
                "sim_latency_mean": frame["latency_sim"].mean(),
                "latency_gap_ratio": frame["latency"].mean() / frame["latency_sim"].mean(),
                "latency_abs_pct_error": 100 * (frame["latency_ratio"] - 1).abs().mean(),
                "real_service_mean": frame["service"].mean(),
                "sim_service_mean": frame["service_sim"].mean(),
                "real_waiting_mean": frame["waiting"].mean(),
                "sim_waiting_mean": frame["waiting_sim"].mean(),
                "shadow_service_abs_pct_error": 100
                * (frame["service_prediction_ratio"] - 1).abs().mean(),
                "shadow_service_ratio_median": frame["service_prediction_ratio"].median(),
                "real_cold_start_mean": frame["cold_start_s"].mean(),
                "predicted_cold_start_mean": frame["predicted_cold_start_s"].mean(),
                "real_step_s_median": frame["step_s_median"].median(),
                "predicted_step_s_median": frame["predicted_step_s"].median(),
                "overhead_s_mean": frame["overhead_s"].mean(),
                "same_decision_share": float(same.mean()),
                "real_deadline_attainment": frame["deadline_met"].mean(),
                "real_cold_starts_per_task": frame["cold_starts"].mean(),
                "sim_cold_starts_per_task": frame["cold_starts_sim"].mean(),
                "attempts_mean": frame["attempts"].mean(),
            }
        )
    return pd.DataFrame(rows)


def step_vs_profile(real: pd.DataFrame, profile: pd.DataFrame) -> pd.DataFrame:
    """Testbed per-step time against the profiled per-step time of the same (model,
    resolution, patches) UNet call: the testbed's own overhead (the 1.3x criterion).
    For gangs of 2+, the testbed's band also carries the overlap margin and the step
    includes the exchange; the profile has neither."""
    steps = profile[profile["op"] == "step"]
    profiled = steps.groupby(["model", "resolution", "patches"])["seconds"].median()
    rows = []
    for row in real.itertuples(index=False):
        key = (row.model, int(row.resolution), int(row.gang_size))
        if key in profiled.index:
            rows.append(
                {
                    "scheduler": row.scheduler,
                    "task_id": row.task_id,
                    "model": row.model,
                    "resolution": row.resolution,
                    "patches": row.gang_size,
                    "testbed_step_s": row.step_s_median,
                    "profiled_step_s": float(profiled[key]),
                    "ratio": row.step_s_median / float(profiled[key]),
                }
            )
    return pd.DataFrame(rows)
