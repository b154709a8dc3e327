"""The demo world: rendered people whose attributes are known, a biased base model, and the
end-to-end proof that the unchanged pipeline reduces its bias (docs/world.md).

It plugs into the library through entry points (pyproject.toml): the model source ``world-base``
(``dft.world.builtin``) and the evaluation reader kind ``world`` (``dft.world.reader``)."""
