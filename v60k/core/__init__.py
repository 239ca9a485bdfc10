"""The pipeline's core: the stage contract, the work dir and its documents, the catalog, config, manifests,
locks, errors, executors and the Python API (``v60k.core.pipeline``). It knows no stage by name."""
