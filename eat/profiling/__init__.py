"""GPU latency profiling of Stable Diffusion components (the ``profile`` stage).

- :mod:`eat.architectures`: the real and tiny SD 1.x / SDXL configs, model
  construction, and the activation sizes patch parallelism exchanges.
- :mod:`eat.profiling.profiler`: the measurements (:class:`~eat.profiling.profiler.ProfileRun`,
  :func:`~eat.profiling.profiler.run_profile`).
- :mod:`eat.stages.profile`: the DVC stage (profile, fit, decide the latency source).

Importing this package is cheap; torch, diffusers and transformers are imported by the
submodules that need them. ``python -m eat.profiling`` runs the stage without the rest
of the pipeline's dependencies (what ``benchmarks/profile_gpu.sh`` uses on a GPU machine).
"""
