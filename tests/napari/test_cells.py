"""Tests for the layer <-> cell glue shared by the widgets (no Qt needed)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from napari_deparray_ctc.napari.cells import (
    cell_count,
    cell_image,
    ensure_deparray_metadata,
    find_partner_layers,
    iter_cell_images,
    layer_channel,
    pair_channel_layers,
    set_cell_label,
)


@dataclass
class FakeLayer:
    name: str
    data: np.ndarray
    metadata: dict = field(default_factory=dict)
    rgb: bool = False


def _meta(channel, ids):
    n = len(ids)
    return {
        "deparray": {
            "channel": channel,
            "cell_ids": list(ids),
            "paths": [None] * n,
            "labels": [None] * n,
            "groups": [None] * n,
        }
    }


def test_stack_and_2d_cell_access():
    stack = FakeLayer("s", np.arange(3 * 4 * 5).reshape(3, 4, 5))
    single = FakeLayer("one", np.ones((4, 5)))
    assert cell_count(stack) == 3 and cell_count(single) == 1
    np.testing.assert_array_equal(cell_image(stack, 2), stack.data[2])
    assert [im.shape for im in iter_cell_images(stack)] == [(4, 5)] * 3
    np.testing.assert_array_equal(cell_image(single), single.data)


def test_rgb_layer_becomes_grey():
    rgb = FakeLayer("rgb", np.dstack([np.full((4, 4), v) for v in (0, 3, 6)]), rgb=True)
    assert cell_count(rgb) == 1
    np.testing.assert_allclose(cell_image(rgb), 3.0)


def test_plain_layer_gets_generated_ids():
    plain = FakeLayer("plain", np.zeros((2, 8, 8)))
    meta = ensure_deparray_metadata(plain)
    assert meta["cell_ids"] == ["plain#0000", "plain#0001"]
    assert meta["labels"] == [None, None]
    assert layer_channel(plain) == "BF"
    # idempotent: a second call keeps the same metadata
    assert ensure_deparray_metadata(plain) is plain.metadata["deparray"]


def test_set_label_updates_every_channel_layer():
    bf = FakeLayer("bf", np.zeros((3, 4, 4)), _meta("BF", ["a", "b", "c"]))
    dapi = FakeLayer("dapi", np.zeros((3, 4, 4)), _meta("DAPI", ["a", "b", "c"]))
    other = FakeLayer("other", np.zeros((4, 4)), _meta("BF", ["z"]))
    assert set_cell_label([bf, dapi, other], "b", "CTC") == 2
    assert bf.metadata["deparray"]["labels"] == [None, "CTC", None]
    assert dapi.metadata["deparray"]["labels"] == [None, "CTC", None]
    assert other.metadata["deparray"]["labels"] == [None]
    with pytest.raises(ValueError, match="label must be one of"):
        set_cell_label([bf], "b", "tumour")


def test_pairing_by_id_and_by_position():
    bf = FakeLayer("bf", np.zeros((3, 4, 4)), _meta("BF", ["a", "b", "c"]))
    dapi = FakeLayer("dapi", np.zeros((2, 4, 4)), _meta("DAPI", ["c", "a"]))
    pairing = pair_channel_layers(bf, dapi)
    assert pairing.dapi_indices == [1, None, 0]
    assert pairing.n_paired == 2
    assert find_partner_layers([bf, dapi], bf, "DAPI") == [dapi]

    plain_bf = FakeLayer("pbf", np.zeros((2, 4, 4)))
    plain_dapi = FakeLayer("pdapi", np.zeros((2, 4, 4)))
    assert pair_channel_layers(plain_bf, plain_dapi).dapi_indices == [0, 1]


def test_pairing_refuses_unrelated_layers():
    bf = FakeLayer("bf", np.zeros((2, 4, 4)), _meta("BF", ["a", "b"]))
    dapi = FakeLayer("dapi", np.zeros((2, 4, 4)), _meta("DAPI", ["x", "y"]))
    with pytest.raises(ValueError, match="share no cell id"):
        pair_channel_layers(bf, dapi)
    plain_bf = FakeLayer("pbf", np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="different cell counts"):
        pair_channel_layers(plain_bf, FakeLayer("d", np.zeros((3, 4, 4))))
