"""The two TSLM variants (Flamingo, SoftPrompt) and their parts. Importing this imports torch."""

from edge_tslm.model.artifact import from_pretrained, save_pretrained
from edge_tslm.model.build import build_model

__all__ = ["build_model", "from_pretrained", "save_pretrained"]
