"""A real STAC API on 127.0.0.1 for the tests: ``rustac serve`` in a subprocess.

The server itself is part of the product (:mod:`stac2cube.serve.process`); the tests import it
from here, next to their other fixtures.
"""

from __future__ import annotations

from ..serve import RustacServer, StacApiServerError, free_port

__all__ = ["RustacServer", "StacApiServerError", "free_port"]
