"""Sphinx configuration for relaxed_e3nn (``sphinx-build -W -b html docs docs/_build/html``)."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from relaxed_e3nn import __version__  # noqa: E402

project = "relaxed_e3nn"
author = "relaxed_e3nn developers"
copyright = "relaxed_e3nn developers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpy-style docstrings carry the types
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True

templates_path = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
