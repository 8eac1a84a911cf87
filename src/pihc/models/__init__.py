"""Networks and the three methods built on them."""

from .fno import FNO, SpectralConv, max_modes
from .methods import PIHC, PISC, PIHCMoE, Prediction, feature_count, initial_tendency, input_features

__all__ = ["FNO", "SpectralConv", "max_modes", "PISC", "PIHC", "PIHCMoE", "Prediction", "input_features",
           "initial_tendency", "feature_count"]
