"""
Sphinx configuration for the wsmux docs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

project = "wsmux"
author = "the wsmux developers"
extensions = ["wsmux_docs"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
