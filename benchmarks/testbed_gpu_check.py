"""GPU check of the testbed: per-step time inside the testbed vs the profiled step time.

The criterion: on a GPU, the per-step time a
testbed worker measures for a task stays within 1.3x of the profiled per-step time of
the same UNet call (same model, latent shape, batch, dtype, eager mode): the testbed
must not add more than its communication.

What it does, on the real SD 1.5 architecture (random weights, float16; real weights
with --model-dir):

1. builds the model folder once (on the GPU, saved as safetensors under --model-root);
2. profiles the UNet call of every checked shape with ``eat.profiling.profiler``'s
   ``time_call`` (CUDA events, warm-up, median of repeats), in this process;
3. starts an embedded Ray (loopback only) with one worker per GPU (at most
   --workers), runs --tasks tasks per shape through ``EdgeWorker.run_task`` (the
   testbed's own path: cache, prompt, reverse loop, exchange, decode) and takes each
   task's median per-step time (the worker synchronises CUDA after every step);
4. writes ``benchmarks/results/testbed_gpu_check.json`` (and prints ``RESULT`` lines):
   per shape the profiled step, the testbed step, their ratio, pass/fail at 1.3x.

Gangs of 2 run only with 2+ GPUs (one worker per GPU). For them the profiled shape is
the band with its overlap margin, and the ratio includes the exchange through Ray
(the criterion's "its communication"), reported separately as
``exchange_s = testbed_step - profiled_band_step``.

Run (one GPU: about 3-5 minutes, most of it building and loading SD 1.5)::

    .venv/bin/python benchmarks/testbed_gpu_check.py
    .venv/bin/python benchmarks/testbed_gpu_check.py --resolutions 512 1024 --steps 30

Without CUDA it exits with status 2 and says so. ``--smoke-cpu`` runs the same script
on the tiny architecture on CPU (a check of the script itself, not of the criterion;
it writes ``testbed_gpu_check_cpu_smoke.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CRITERION = 1.3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 768, 1024])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tasks", type=int, default=2, help="tasks per shape (first is warm-up)")
    parser.add_argument("--workers", type=int, default=2, help="at most one per GPU")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--margin", type=int, default=8, help="overlap margin (latent rows)")
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--model-dir", default=None, help="real SD 1.5 weights (diffusers folder)")
    parser.add_argument("--model-root", default=str(Path.home() / ".cache/eat/testbed-models"))
    parser.add_argument("--out", default=None, help="result JSON (default: benchmarks/results)")
    parser.add_argument("--smoke-cpu", action="store_true", help="tiny models on CPU")
    args = parser.parse_args(argv)

    import torch

    if args.smoke_cpu:
        device, size, args.dtype = "cpu", "tiny", "float32"
        torch.set_num_threads(1)  # as each worker
        args.margin = min(args.margin, 2)
        name = "testbed_gpu_check_cpu_smoke.json"
    else:
        device, size, name = "cuda", "real", "testbed_gpu_check.json"
        if not torch.cuda.is_available():
            print("testbed_gpu_check: no CUDA device; this check needs a GPU", file=sys.stderr)
            return 2
    out = Path(args.out or ROOT / "benchmarks" / "results" / name)

    from eat.profiling.profiler import library_versions, time_call
    from eat.testbed import cluster
    from eat.testbed.engine import GenerationRequest, encode_prompt, row_bands
    from eat.testbed.models import load_model, prepare_model_folder, weight_file_bytes
    from eat.testbed.worker import ModelSource, TaskSpec, WorkerConfig

    began = time.perf_counter()
    model = "sd15"
    # 1. the model folder
    if args.model_dir:
        folder = Path(args.model_dir)
    else:
        with torch.device(device):
            folder = prepare_model_folder(
                Path(args.model_root), model, size, seed=0, scheduler="ddim", dtype=args.dtype
            )
    nbytes = weight_file_bytes(folder)
    # 2. profile the exact UNet calls
    loaded = load_model(model, folder, device=device, dtype=args.dtype, scheduler="ddim")
    gpus = torch.cuda.device_count() if device == "cuda" else 2
    unet = loaded.unet
    gangs = [1] + ([2] if gpus >= 2 and args.workers >= 2 else [])
    profiled: dict[tuple[int, int], float] = {}
    for resolution in args.resolutions:
        request = GenerationRequest("a photo of an astronaut", resolution, 1, args.guidance, 0)
        cond = encode_prompt(loaded, request)
        side = resolution // 8
        for gang in gangs:
            band = row_bands(side, gang, args.margin, loaded.unet_alignment)[0]
            batch = 2 if cond.guided else 1
            sample = torch.randn(
                batch, 4, band.computed_rows, side, device=device, dtype=loaded.dtype
            )
            timestep = torch.tensor(500, device=device)

            def step(sample=sample, timestep=timestep, cond=cond, unet=unet):
                return unet(sample, timestep, encoder_hidden_states=cond.embeds, return_dict=False)[
                    0
                ]

            with torch.inference_mode():
                timing = time_call(step, device=device, warmup=3, repeats=10, graph=False)
            profiled[(resolution, gang)] = timing.seconds
    del loaded, unet, step
    if device == "cuda":
        torch.cuda.empty_cache()
    # 3. the testbed
    workers_n = min(args.workers, gpus)
    cluster.start_ray(None, workers_n, device, object_store_mb=1024 if device == "cuda" else 256)
    rows = []
    try:
        config = dict(
            device=device,
            dtype=args.dtype,
            threads=1,
            memory_budget_bytes=4 * nbytes,
            models={model: ModelSource(str(folder), size, 0, args.model_root)},
            model_bytes={model: nbytes},
            scheduler="ddim",
            margin=args.margin,
        )
        workers = cluster.create_workers(
            [WorkerConfig(server_id=i, **config) for i in range(workers_n)], max_restarts=0
        )
        import ray

        device_name = ray.get(workers[0].ping.remote())["device_name"]
        task_id = 0
        for resolution in args.resolutions:
            for gang in gangs:
                medians = []
                for _ in range(args.tasks):
                    request = GenerationRequest(
                        "a photo of an astronaut", resolution, args.steps, args.guidance, task_id
                    )
                    servers = tuple(range(gang))
                    spec = TaskSpec(task_id, 1, model, request, servers, return_image=False)
                    result = ray.get(workers[0].run_task.remote(spec, workers[1:gang]))
                    steps = sorted(result.step_s)
                    medians.append(steps[len(steps) // 2])
                    task_id += 1
                testbed_step = min(medians[1:] or medians)  # first task: warm-up
                reference = profiled[(resolution, gang)]
                ratio = testbed_step / reference
                rows.append(
                    {
                        "model": model,
                        "resolution": resolution,
                        "patches": gang,
                        "margin_rows": args.margin if gang > 1 else 0,
                        "profiled_step_s": reference,
                        "testbed_step_s": testbed_step,
                        "ratio": ratio,
                        "exchange_s": testbed_step - reference if gang > 1 else 0.0,
                        "passes": ratio <= CRITERION,
                    }
                )
                print(
                    f"RESULT {model} {resolution}px patches={gang}: profiled "
                    f"{reference * 1e3:.2f} ms, testbed {testbed_step * 1e3:.2f} ms, "
                    f"ratio {ratio:.3f} ({'pass' if ratio <= CRITERION else 'FAIL'} at {CRITERION}x)"
                )
    finally:
        cluster.shutdown()
    record = {
        "criterion": f"testbed per-step time <= {CRITERION} x profiled per-step time",
        "device": device_name,
        "gpus": gpus,
        "dtype": args.dtype,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "weights": "pretrained" if args.model_dir else f"random ({size} SD 1.5 architecture)",
        "versions": library_versions(),
        "python": platform.python_version(),
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": time.perf_counter() - began,
        "rows": rows,
        "all_pass": all(row["passes"] for row in rows),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}; all pass: {record['all_pass']}")
    print(f"RESULT worst_step_ratio={max(row['ratio'] for row in rows):.4f}")
    if args.smoke_cpu:
        return 0  # a check of the script: the criterion is for GPUs
    return 0 if record["all_pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
