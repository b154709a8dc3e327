"""One typed configuration tree: defaults, then YAML, then ``--set key=value`` overrides.

Import from the submodules (``dft.config.load``, ``dft.config.schema``): stage packages import
``dft.config.base`` and this package must not pull the schema in on their behalf.
"""
