"""Training the learned schedulers: one run (:mod:`eat.training.loop`), the matrix of runs
in parallel with Ray (:mod:`eat.training.matrix`), and the training figures.

Torch and Ray are imported by the submodules only.
"""
