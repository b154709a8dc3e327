"""The demo world: rendered people whose attributes are known, a biased base model, and the
end-to-end proof that the unchanged pipeline reduces its bias (docs/world.md).

Importing it registers the model source ``world-base`` and the evaluation reader kind ``world``."""

from dft.world.builtin import register_builtin_model

register_builtin_model()
