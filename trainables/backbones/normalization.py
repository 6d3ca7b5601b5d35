"""Waveform normalisation of the wav2vec 2.0-style families: its value, its source, and the rule
that adapters and runs written before emotune recorded it were made with.

The loader (:func:`trainables.backbones.load_backbone`) decides ``do_normalize`` from the
backbone's ``preprocessor_config.json``, else from the family default; an exported adapter and a
run fingerprint record the value, so that a later change of that decision cannot change what an
adapter predicts or what a resumed run trains on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from trainables.backbones.base import Backbone
from trainables.backbones.w2v import W2VBackbone

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"

NormalizeSource = Literal["file", "family default", "preset", "recorded"]


@dataclass(frozen=True)
class InputNormalization:
    """Whether a wav2vec 2.0-style backbone normalises each waveform, and who decided it.

    Attributes:
        normalize: zero-mean / unit-variance per waveform (``W2VBackbone.normalize``).
        source: ``"file"``: the backbone's ``preprocessor_config.json`` (True when it omits
            ``do_normalize``); ``"family default"``: no such file, ``feat_extract_norm ==
            "layer"``; ``"preset"``: a ``tiny-*`` preset (True); ``"recorded"``: set by
            :func:`set_input_normalization` from an adapter or run that recorded it.
    """

    normalize: bool
    source: NormalizeSource

    @property
    def legacy(self) -> bool:
        """What emotune chose for this backbone before family defaults (issue 12): the
        preprocessor file's ``do_normalize`` when the backbone has the file, else True.

        Adapters and run fingerprints written then recorded no value; they were made with this.
        """
        return self.normalize if self.source == "file" else True


def input_normalization(backbone: Backbone) -> InputNormalization | None:
    """The backbone's waveform normalisation and its source; None for families without one
    (Whisper's log-mel front end)."""
    if not isinstance(backbone, W2VBackbone):
        return None
    # Set by the loader; a backbone constructed directly was given its value explicitly.
    return InputNormalization(backbone.normalize, getattr(backbone, "normalize_source", "file"))


def set_input_normalization(
    backbone: Backbone, normalize: bool | None, what: str
) -> InputNormalization | None:
    """Makes ``backbone`` normalise its waveforms as a record (adapter, run) says it was trained.

    Args:
        backbone: a backbone from :func:`load_backbone`.
        normalize: the recorded value, already checked to be a bool; None when the record was
            written before emotune recorded it: then :attr:`InputNormalization.legacy` applies
            (the rule of that time) and a note is logged.
        what: the record, for messages (e.g. ``DIR/emotune.json``).

    Returns:
        What the backbone now applies; None for families without normalisation.

    Raises:
        ValueError: a value recorded for a family that has no waveform normalisation.
    """
    now = input_normalization(backbone)
    if now is None:
        if normalize is not None:
            raise ValueError(
                f"{what}: normalize = {normalize!r}; a {backbone.family} backbone has no "
                "waveform normalisation (expected no normalize field)"
            )
        return None
    value = now.legacy if normalize is None else normalize
    alone = f"{backbone.name} alone now gives {now.normalize} ({now.source})"
    if normalize is None:
        log.log(
            logging.WARNING if value != now.normalize else logging.INFO,
            "%s records no normalize (written by an older emotune): using do_normalize=%s, "
            "the rule of that emotune (the backbone's %s, else true); %s",
            *(what, value, PREPROCESSOR_FILE, alone),
        )
    elif value != now.normalize:
        log.info("%s: using the recorded do_normalize=%s; %s", what, value, alone)
    assert isinstance(backbone, W2VBackbone)
    backbone.normalize = value
    backbone.normalize_source = "recorded"
    return InputNormalization(value, "recorded")
