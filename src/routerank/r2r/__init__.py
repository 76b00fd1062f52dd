"""R2R, Route-to-Rerank: per-domain LoRA experts over one frozen backbone, chosen per query by a router.

One package holds the whole method, bottom to top:
- `bank`: the expert bank (adapters on one backbone, switched per query; the bare backbone is the generalist)
- `routers`: the latent softmax router on the backbone's query state, its centroid/random/oracle baselines and
  the threshold that sends unlikely queries to the generalist
- `reranker`: `R2RReranker`, the `r2r:` spec (route, then score with the chosen expert)
- `eag`: entity abstraction (EAG) for training queries
- `trainer`: the resumable expert trainer

Nothing here imports torch at import time; the backbone loads it when a model is used.
"""

from routerank.r2r.bank import ExpertBank
from routerank.r2r.routers import CentroidRouter, OracleRouter, RandomRouter, SoftmaxRouter, calibrate_threshold
from routerank.route import GENERALIST

__all__ = [
    "GENERALIST",
    "CentroidRouter",
    "ExpertBank",
    "OracleRouter",
    "RandomRouter",
    "SoftmaxRouter",
    "calibrate_threshold",
]
