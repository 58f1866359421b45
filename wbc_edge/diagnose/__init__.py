"""`wbc-edge diagnose`: where an int8 model loses parity with float32, and what fixing it selectively costs.

    from wbc_edge.diagnose import DiagnoseConfig, diagnose
    diagnose(DiagnoseConfig("runs/r1", data=("pbc=data/pbc", "tecom=data/tecom"), out_dir="diag"))

- `config`     `DiagnoseConfig` (every CLI default; calibration defaults are export's).  TF-free.
- `inputs`     model / split / labels as export resolves them, domains' pixels (npz cache), calibration arms.
- `layers`     range_suspects (a domain's error vs the calibration images'); the per-layer metrics and
               ranking re-exported from export.layer_error.  TF-free.
Built on `wbc_edge.export.selective.Quantiser` (one QuantizationDebugger calibration -> per-layer error on
any images, int8 models with chosen layers left float, uint8 I/O) - the same code export's int8_mixed
variant runs, so a K chosen here keeps the same layers float there.
- `measure`    agreement with float32 and 1-thread latency through ai-edge-litert.  TF-free.
- `pipeline`   `diagnose()`: the stages, the trade-off curve over K, the calibration arms.
- `report`     report.json / report.md / layers.png / tradeoff.png.
"""

from .config import ARMS, RANK_METRICS, DiagnoseConfig
from .layers import LayerError, parse_statistics, rank
from .pipeline import DiagnoseResult, diagnose, recommend_k

__all__ = ["ARMS", "RANK_METRICS", "DiagnoseConfig", "DiagnoseResult", "LayerError", "diagnose",
           "parse_statistics", "rank", "recommend_k"]
