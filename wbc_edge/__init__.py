"""wbc-edge: a white-blood-cell classifier from Keras training to TFLite on the edge.

Packages by stage, each importing only earlier ones (docs/ARCHITECTURE.md; tests/test_layout.py checks it):
core -> runtime -> data -> metrics -> model -> calibrate -> train -> export -> diagnose | adapt -> bench -> cli.
Only the Keras-side stages import TensorFlow, and only when called; `wbc_edge.runtime` and `wbc_edge.core` run
with numpy + Pillow + LiteRT alone.
"""

__version__ = "0.1.0"
