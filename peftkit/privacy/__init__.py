"""Differentially private adapter training (train.privacy): Opacus's accountant, Poisson sampling, and the DP-SGD
gradient of one step; the membership-inference audit that shows what it buys."""

from .accounting import COVERS, Budget, PrivacyPlan, epsilon_of, plan_privacy
from .sampling import PoissonBatches
from .sgd import PrivateGrads, PrivateSGD, example_losses

__all__ = ["COVERS", "Budget", "PoissonBatches", "PrivacyPlan", "PrivateGrads", "PrivateSGD", "epsilon_of",
           "example_losses", "plan_privacy"]
