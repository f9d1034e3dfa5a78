"""reprlab: learn image representations and measure them.

Library layout (one home for each idea):

- ``errors``      the one user-facing error type (one line, exit code 2)
- ``io``          atomic writes, run folders, checkpoints: every file reprlab writes
- ``config``      run configurations as plain dataclasses; flags and TOML come from them
- ``data``        every dataset format, caching, download, transforms
- ``linear``      from-scratch NumPy logistic / softmax regression
- ``early_stopping``  the one early-stopping helper used by every trainer
- ``metrics``     accuracy, confusion matrix, precision/recall/F1, kNN accuracy
- ``plots``       every figure
- ``encoders``, ``triplets``, ``augment``, ``train``  the neural parts (PyTorch)
- ``modes``       the registry of CLI modes; ``cli`` is a thin shell over it
"""

#: 0.N is release vN of the README and docs/results-history.md (v22: the release of 2026-12-06)
__version__ = "0.22.0"
