"""Third-party code vendored unmodified (each file names its origin, version and licence in its header).

- `metadata_schema_py_generated.py` + `metadata_schema.fbs`: the official TFLite metadata schema
  (MediaPipe / TFLite Support, Apache-2.0) and the Python module flatc generates from it.  Only
  `wbc_edge.export.metadata_schema` imports it (export time); the runtime never does.
"""
