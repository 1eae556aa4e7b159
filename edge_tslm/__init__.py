"""edge-tslm: time-series language models from full-precision training to devices.

Importing the package stays cheap: no torch here; heavy parts load on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
