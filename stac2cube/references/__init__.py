"""Reference images of a catalog: the co-registration reference and the clear-sky reference of
the multi-temporal cloud test. :mod:`.images` rates and chooses them (pure), :mod:`.store`
writes and reads their versions, :mod:`.build` builds what a run needs."""

from .images import (
    MIN_TEXTURE,
    WHITE_NOISE_TEXTURE,
    ReferenceChoice,
    choose_reference,
    clear_fraction,
    noise_sigma,
    refresh_window,
    reproject_reference,
    texture_score,
    texture_snr,
)

__all__ = [
    "MIN_TEXTURE",
    "WHITE_NOISE_TEXTURE",
    "ReferenceChoice",
    "choose_reference",
    "clear_fraction",
    "noise_sigma",
    "refresh_window",
    "reproject_reference",
    "texture_score",
    "texture_snr",
]
