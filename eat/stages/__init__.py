"""The DVC stages, one module each: ``profile``, ``build_env``, ``train``, ``evaluate``,
``testbed``.

Each module separates the computation (functions that return tables or objects) from a
thin ``run(params, paths)`` that writes the files and figures ``dvc.yaml`` declares
(:mod:`eat.stages.paths`). The notebooks and the command line call ``run``; importing a
stage module imports only what that stage needs, so ``dvc.yaml`` can list exactly its
dependencies (checked by ``tests/test_dvc_deps.py``).
"""
