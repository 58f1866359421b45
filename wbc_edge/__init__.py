"""wbc-edge: a white-blood-cell classifier from Keras training to TFLite on the edge.

The package is split so that data flows one way: data -> preprocess -> train -> evaluate -> export ->
runtime -> bench.  Only `train`, `export` and the Keras half of `bench` import TensorFlow, and only when
called; `wbc_edge.runtime` and `wbc_edge.core.preprocess` run with numpy + Pillow + LiteRT alone.
"""

__version__ = "0.1.0"
