"""Every training run of ``params.train``, in parallel with Ray.

:func:`train_matrix` runs the agents x presets x seeds matrix and the ablation variants
(:func:`resolve_matrix`; the third-party learners too): locally by default (on
``num_cpus`` cores, every Ray process listening on 127.0.0.1 only), or on an existing
cluster when ``train.ray_address`` is set (``ray start --head`` there; the output folder
must then be on storage that every node shares, for the resumable checkpoints; the final
models travel back to the driver through Ray). ``parallel: serial`` runs them one after
another in this process.

A warm start's demonstrations depend on the seed, the workloads and the teacher, not on
the agent (:func:`~eat.training.loop.demonstration_identity`): each set is played once
(:func:`demonstration_sets`), first, and given to every run that shares it, which then
ends exactly as if it had played them itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from eat.distributed import import_ray, start_ray
from eat.params import Params
from eat.training.loop import (
    RESUME_FILE,
    Demonstrations,
    RunResult,
    RunSpec,
    demonstrate,
    demonstration_identity,
    needs_demonstrations,
    resolve_runs,
    train_run,
    write_run,
)
from eat.training.sb3 import (
    Sb3RunResult,
    Sb3RunSpec,
    resolve_sb3_runs,
    train_sb3_run,
    write_sb3_run,
)

AnyRunSpec = RunSpec | Sb3RunSpec
AnyRunResult = RunResult | Sb3RunResult


def resolve_matrix(params: Params) -> list[AnyRunSpec]:
    """Every run of ``params.train``: the SAC agents' and ablation variants'
    (:func:`~eat.training.loop.resolve_runs`), then the third-party learners'
    (:func:`~eat.training.sb3.resolve_sb3_runs`)."""
    return [*resolve_runs(params), *resolve_sb3_runs(params)]


def demonstration_sets(specs: list[AnyRunSpec], checkpoint_root: Path) -> dict[str, list[RunSpec]]:
    """The demonstration sets that two or more runs still need, by the JSON of their
    :func:`~eat.training.loop.demonstration_identity`, each with the runs that share it
    in ``specs`` order (a run resuming from a checkpoint is past its warm start; a set
    that only one run needs is played in that run)."""
    users: dict[str, list[RunSpec]] = {}
    for spec in specs:
        if not isinstance(spec, RunSpec) or not needs_demonstrations(spec):
            continue
        if (checkpoint_root / spec.relative_dir / RESUME_FILE).exists():
            continue
        users.setdefault(demonstration_key(spec), []).append(spec)
    return {key: runs for key, runs in users.items() if len(runs) > 1}


def demonstration_key(spec: RunSpec) -> str:
    """The demonstration set of ``spec`` as a dictionary key."""
    return json.dumps(demonstration_identity(spec), sort_keys=True)


def train_one(
    spec: AnyRunSpec,
    checkpoint_root: Path,
    *,
    progress_bar: bool = False,
    demonstrations: Demonstrations | None = None,
) -> AnyRunResult:
    """One run by its trainer, resuming from its checkpoint under ``checkpoint_root`` if
    an earlier try left one (third-party learners write none); ``demonstrations``: its
    demonstration set, played already (None: the run plays its own if it needs them)."""
    if isinstance(spec, Sb3RunSpec):
        return train_sb3_run(spec, progress_bar=progress_bar)
    return train_run(
        spec,
        checkpoint_dir=checkpoint_root / spec.relative_dir,
        progress_bar=progress_bar,
        demonstrations=demonstrations,
    )


def _train_task(
    spec: AnyRunSpec, checkpoint_root: str, demonstrations: Demonstrations | None
) -> AnyRunResult:
    """A Ray task: one run, resuming from its checkpoint if a previous try died
    (idempotent: a retried task continues where the last checkpoint left it; a
    third-party learner's run, which has none, trains again to the same result)."""
    import ray

    result = train_one(spec, Path(checkpoint_root), demonstrations=demonstrations)
    result.summary["node"] = ray.get_runtime_context().get_node_id()
    return result


def write_result(result: AnyRunResult, out_dir: Path) -> Path:
    """Write one run's outputs under ``out_dir`` (its model folder, which it returns)."""
    if isinstance(result, Sb3RunResult):
        return write_sb3_run(result, out_dir)
    return write_run(result, out_dir)


def run_matrix(
    specs: list[AnyRunSpec],
    out_dir: Path,
    *,
    parallel: str,
    ray_address: str | None,
    num_cpus: int | None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every spec and write its outputs; returns the run summaries in spec order."""
    specs = sorted(specs, key=lambda s: -s.cost())
    checkpoint_root = out_dir / "_resume"
    sets = demonstration_sets(specs, checkpoint_root)
    set_of = {spec.run_name: key for key, runs in sets.items() for spec in runs}
    summaries: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(specs), desc="train runs", disable=not progress)
    if parallel == "serial":
        played: dict[str, Demonstrations] = {}
        for spec in specs:
            key = set_of.get(spec.run_name)
            demonstrations = None
            if key is not None:
                if key not in played:
                    played[key] = demonstrate(sets[key][0])
                demonstrations = played[key]
                if spec is sets[key][-1]:  # the set's last run lets it go
                    del played[key]
            result = train_one(spec, checkpoint_root, demonstrations=demonstrations)
            write_result(result, out_dir)
            summaries[spec.run_name] = result.summary
            bar.update(1)
    elif parallel == "ray":
        ray = import_ray()
        started = start_ray(ray_address, num_cpus=num_cpus)
        try:
            # SPREAD: tasks go to every node of a cluster
            remote = ray.remote(
                num_cpus=1, max_retries=2, retry_exceptions=False, scheduling_strategy="SPREAD"
            )
            task, play = remote(_train_task), remote(demonstrate)
            # submitted first, so that they take the first cores: most runs wait for one
            played = {key: play.remote(runs[0]) for key, runs in sets.items()}
            pending = [
                task.remote(spec, str(checkpoint_root), played.get(set_of.get(spec.run_name)))
                for spec in specs
            ]
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                result = ray.get(done[0])
                write_result(result, out_dir)
                summaries[result.spec.run_name] = result.summary
                bar.update(1)
                bar.set_postfix(last=result.spec.run_name, wall=f"{result.summary['wall_s']:.0f}s")
        finally:
            if started:
                ray.shutdown()
    else:
        raise ValueError(f"parallel {parallel!r} is not supported; choose one of ['ray', 'serial']")
    bar.close()
    if checkpoint_root.exists() and not any(checkpoint_root.rglob(RESUME_FILE)):
        for directory in sorted(checkpoint_root.rglob("*"), reverse=True):
            if directory.is_dir():
                directory.rmdir()
        checkpoint_root.rmdir()
    return [summaries[spec.run_name] for spec in sorted(specs, key=lambda s: s.run_name)]


def train_matrix(params: Params, out_dir: Path, *, progress: bool = True) -> pd.DataFrame:
    """Every run of ``params.train`` (the ``train`` stage's computation)."""
    train = params.train
    specs = resolve_matrix(params)
    started = time.perf_counter()
    summaries = run_matrix(
        specs,
        out_dir,
        parallel=train.parallel,
        ray_address=train.ray_address,
        num_cpus=train.num_cpus,
        progress=progress,
    )
    frame = pd.DataFrame(summaries)
    frame.attrs["wall_s"] = time.perf_counter() - started
    return frame
