"""Collection/item templates and the JSON Schema of the stac2cube provenance extension.

Shipped inside the package as ``stac2cube.catalog_templates``; see :mod:`stac2cube.templates`.
"""
