"""`peftkit bench`: a recipe trained by peftkit and by the plain TRL route, side by side.

    routes.py        the child-process entry and the RouteRun record    peer.py      what the TRL route can mirror
    peftkit_route.py peftkit.train with per-step timing                     trl_route.py SFTTrainer + LoraConfig + bnb
    measure.py       peak memory, token rates, matmul probe, FLOPs       runner.py    A B A B, medians, ratios, checks
    report.py        NAME.json, NAME.md, NAME.png                      trl_preference.py  DPO/ORPO/CPO/KTOTrainer
    record.py        RouteRun, matched settings, example digests           on peftkit's pair ids

Heavy libraries load in the route processes; importing this package stays light.
"""

from .runner import BenchResult, run_bench

__all__ = ["BenchResult", "run_bench"]
