"""The napari reader through the npe2 manifest: layers, names, colormaps, metadata contract."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_deparray_ctc.core.synth import CHANNELS, write_export
from napari_deparray_ctc.napari.reader import napari_get_reader, read_deparray

PLUGIN = "napari-deparray-ctc"
N_CELLS = 4
SIZE = 24
EXPECTED_COLORMAPS = {
    "BF": "gray",
    "DAPI": "blue",
    "FITC": "green",
    "PE": "yellow",
    "APC": "magenta",
}
CONTRACT_KEYS = {
    "channel",
    "cell_ids",
    "paths",
    "labels",
    "groups",
    "pixel_size_um",
    "original_shapes",
}


def _export(tmp_path: Path, layout: str, n_cells: int = N_CELLS) -> Path:
    return write_export(
        tmp_path / layout, n_cells, ctc_fraction=0.5, seed=3, layout=layout, image_size=SIZE
    )


def _labels_csv(folder: Path) -> dict[str, tuple[str, str]]:
    with open(folder / "labels.csv", newline="") as handle:
        return {row["cell_id"]: (row["label"], row["sample"]) for row in csv.DictReader(handle)}


def _check_contract(layer, n_cells: int, channel: str) -> dict:
    meta = layer.metadata["deparray"]
    assert CONTRACT_KEYS <= set(meta)
    assert meta["channel"] == channel
    for key in ("cell_ids", "paths", "labels", "groups", "original_shapes"):
        assert len(meta[key]) == n_cells, key
    assert len(set(meta["cell_ids"])) == n_cells
    assert all(label in ("CTC", "WBC", None) for label in meta["labels"])
    assert all(Path(p).is_file() for p in meta["paths"])
    assert all(len(shape) == 2 for shape in meta["original_shapes"])
    return meta


# --------------------------------------------------------------------------------------------
# napari_get_reader: cheap, never raises, claims only DEPArray-like input


@pytest.mark.parametrize("layout", ["multipage", "perchannel", "ome", "classdirs", "stack"])
def test_get_reader_claims_each_layout_folder(tmp_path, layout):
    folder = _export(tmp_path, layout)
    assert napari_get_reader(str(folder)) is read_deparray
    assert napari_get_reader(folder) is read_deparray  # a Path works too


def test_get_reader_claims_single_cell_files(tmp_path):
    multipage = _export(tmp_path, "multipage")
    perchannel = _export(tmp_path, "perchannel")
    assert napari_get_reader(str(multipage / "cell0000.tif")) is read_deparray
    assert napari_get_reader(str(perchannel / "cell0000_DAPI.tif")) is read_deparray
    files = sorted(str(p) for p in perchannel.glob("cell0001_*.tif"))
    assert napari_get_reader(files) is read_deparray


def test_get_reader_claims_channel_names_in_header(tmp_path):
    # a neutral file name: only the PageName tags say it is a cell
    path = tmp_path / "image_a.tif"
    with tifffile.TiffWriter(path) as tif:
        for name in ("Brightfield", "Hoechst"):
            tif.write(np.zeros((20, 20), np.uint16), extratags=[(285, "s", 0, name, True)])
    assert napari_get_reader(str(path)) is read_deparray


def test_get_reader_leaves_other_files_alone(tmp_path):
    plain = tmp_path / "image.tif"
    tifffile.imwrite(plain, np.random.default_rng(0).integers(0, 255, (600, 700), np.uint8))
    text = tmp_path / "notes.tif"
    text.write_text("not a tiff")
    png_folder = tmp_path / "holiday"
    png_folder.mkdir()
    (png_folder / "beach.png").write_bytes(b"\x89PNG\r\n")
    assert napari_get_reader(str(plain)) is None
    assert napari_get_reader(str(text)) is None
    assert napari_get_reader(str(png_folder)) is None
    assert napari_get_reader(str(tmp_path / "missing" / "cell0001_BF.tif")) is None
    assert napari_get_reader([]) is None


@pytest.mark.parametrize("weird", [None, 42, object(), ["a", 3], b"\xff\xfe"])
def test_get_reader_never_raises(weird):
    assert napari_get_reader(weird) is None


def test_get_reader_reads_no_pixels(tmp_path, monkeypatch):
    folder = _export(tmp_path, "multipage")

    def refuse(*args, **kwargs):
        raise AssertionError("napari_get_reader must not read pixels")

    monkeypatch.setattr(tifffile, "imread", refuse)
    monkeypatch.setattr(tifffile.TiffFile, "asarray", refuse)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)
    assert napari_get_reader(str(folder)) is read_deparray
    assert napari_get_reader(str(folder / "cell0002.tif")) is read_deparray


# --------------------------------------------------------------------------------------------
# viewer.open(..., plugin="napari-deparray-ctc") on each layout


@pytest.mark.parametrize("layout", ["multipage", "perchannel", "ome", "classdirs", "stack"])
def test_open_folder_gives_one_stack_per_channel(make_napari_viewer, tmp_path, layout):
    folder = _export(tmp_path, layout)
    truth = _labels_csv(folder)
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)

    assert [layer.name for layer in layers] == [f"{layout} :: {ch}" for ch in CHANNELS]
    assert len(viewer.layers) == len(CHANNELS)
    pixel_size = None
    for index, (layer, channel) in enumerate(zip(layers, CHANNELS, strict=True)):
        assert layer.data.shape == (N_CELLS, SIZE, SIZE)
        assert layer.data.dtype == np.uint16
        assert layer.colormap.name == EXPECTED_COLORMAPS[channel]
        assert layer.blending == ("translucent_no_depth" if index == 0 else "additive")
        low, high = layer.contrast_limits
        assert layer.data.min() <= low < high <= layer.data.max()
        meta = _check_contract(layer, N_CELLS, channel)
        assert sorted(meta["cell_ids"]) == sorted(truth)
        assert meta["labels"] == [truth[cid][0] for cid in meta["cell_ids"]]
        assert meta["groups"] == [truth[cid][1] for cid in meta["cell_ids"]]
        assert meta["original_shapes"] == [[SIZE, SIZE]] * N_CELLS
        pixel_size = meta["pixel_size_um"]
        assert pixel_size is not None and 0.1 < pixel_size < 2
        np.testing.assert_allclose(layer.scale, (1.0, pixel_size, pixel_size))
    # the slider steps through the cells
    assert viewer.dims.nsteps[0] == N_CELLS
    # all channel layers describe the same cells in the same order
    ids = {tuple(layer.metadata["deparray"]["cell_ids"]) for layer in layers}
    assert len(ids) == 1


def test_open_one_cell_gives_2d_layers(make_napari_viewer, tmp_path):
    folder = _export(tmp_path, "ome")
    path = folder / "cell0001.ome.tif"
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)

    assert [layer.name for layer in layers] == [f"cell0001 :: {ch}" for ch in CHANNELS]
    with tifffile.TiffFile(path) as tif:
        expected = tif.asarray()  # (C, Y, X)
    for plane, layer in zip(expected, layers, strict=True):
        assert layer.ndim == 2
        np.testing.assert_array_equal(layer.data, plane)
        meta = _check_contract(layer, 1, layer.metadata["deparray"]["channel"])
        assert meta["cell_ids"] == ["cell0001"]
        assert meta["paths"] == [str(path)]
        assert meta["labels"] == [_labels_csv(folder)["cell0001"][0]]


def test_open_several_files_as_a_stack(make_napari_viewer, tmp_path):
    folder = _export(tmp_path, "multipage")
    files = [str(folder / f"cell000{i}.tif") for i in (0, 2, 3)]
    viewer = make_napari_viewer()
    layers = viewer.open(files, stack=True, plugin=PLUGIN)

    assert len(layers) == len(CHANNELS)
    assert layers[0].name == "multipage :: BF"  # the common folder names the stack
    for layer in layers:
        assert layer.data.shape == (3, SIZE, SIZE)
        assert layer.metadata["deparray"]["cell_ids"] == ["cell0000", "cell0002", "cell0003"]
        assert layer.metadata["deparray"]["paths"] == files


def test_open_perchannel_files_with_fitc_and_different_sizes(make_napari_viewer, tmp_path):
    rng = np.random.default_rng(1)
    shapes = {"cellA": (20, 20), "cellB": (28, 24)}
    for cell, shape in shapes.items():
        for channel in ("BF", "FITC", "DAPI"):
            image = rng.integers(100, 4000, shape, dtype=np.uint16)
            tifffile.imwrite(tmp_path / f"{cell}_{channel}.tif", image, compression="zlib")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path), plugin=PLUGIN)

    by_channel = {layer.metadata["deparray"]["channel"]: layer for layer in layers}
    assert [layer.metadata["deparray"]["channel"] for layer in layers] == ["BF", "DAPI", "FITC"]
    assert by_channel["FITC"].colormap.name == "green"
    for layer in layers:
        meta = layer.metadata["deparray"]
        assert layer.data.shape == (2, 28, 24)  # padded to the largest cell
        assert meta["cell_ids"] == ["cellA", "cellB"]
        assert meta["original_shapes"] == [[20, 20], [28, 24]]
        assert meta["labels"] == [None, None]
        assert meta["pixel_size_um"] is None
        np.testing.assert_allclose(layer.scale, (1.0, 1.0, 1.0))
    # cellB is not padded: its pixels come through unchanged
    np.testing.assert_array_equal(
        by_channel["BF"].data[1], tifffile.imread(tmp_path / "cellB_BF.tif")
    )


def test_plain_tiff_is_left_to_napari(make_napari_viewer, tmp_path):
    plain = tmp_path / "image.tif"
    tifffile.imwrite(plain, np.random.default_rng(0).integers(0, 255, (600, 700), np.uint8))
    viewer = make_napari_viewer()
    layers = viewer.open(str(plain))  # no plugin named: ours must not claim it
    assert len(layers) == 1
    assert "deparray" not in layers[0].metadata
    assert layers[0].data.shape == (600, 700)


# --------------------------------------------------------------------------------------------
# bad input: one warning while the good cells open; a clear error when nothing can be read


def test_skipped_files_give_one_warning(make_napari_viewer, tmp_path, monkeypatch):
    folder = _export(tmp_path, "multipage", n_cells=3)
    (folder / "cell0097.tif").write_bytes(b"")  # zero bytes
    (folder / "cell0098.tif").write_bytes(b"this is not a TIFF at all")
    good = (folder / "cell0000.tif").read_bytes()
    (folder / "cell0099.tif").write_bytes(good[: len(good) // 3])  # truncated
    messages: list[str] = []
    import napari.utils.notifications as notifications

    monkeypatch.setattr(notifications, "show_warning", messages.append)
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)

    assert len(layers) == len(CHANNELS)
    assert layers[0].data.shape[0] == 3
    assert len(messages) == 1
    for name in ("cell0097.tif", "cell0098.tif", "cell0099.tif"):
        assert name in messages[0]
    assert "opened 3 cell(s)" in messages[0]


def test_nothing_readable_raises_an_error_naming_the_file(make_napari_viewer, tmp_path):
    bad = tmp_path / "cell0001_BF.tif"
    bad.write_bytes(b"")
    assert napari_get_reader(str(bad)) is read_deparray  # claimed by its name
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(str(bad), plugin=PLUGIN)
    chain, error = [], info.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("cell0001_BF.tif" in text for text in chain)
    assert len(viewer.layers) == 0


# --------------------------------------------------------------------------------------------
# large exports open lazily (issue 14)


def test_a_large_export_opens_as_lazy_dask_layers(make_napari_viewer, tmp_path, monkeypatch):
    import dask.array as da

    from napari_deparray_ctc.core.io import lazy as lazy_module
    from napari_deparray_ctc.napari import reader as reader_module

    folder = _export(tmp_path, "multipage", n_cells=40)
    monkeypatch.setattr(reader_module, "_ALWAYS_EAGER_CELLS", 0)
    monkeypatch.setattr(lazy_module, "LAZY_MIN_CELLS", 10)  # as if 40 cells were 100,000
    monkeypatch.setattr(lazy_module, "CHUNK_CELLS", 8)
    truth = _labels_csv(folder)
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)

    assert [layer.name for layer in layers] == [f"multipage :: {ch}" for ch in CHANNELS]
    for layer, channel in zip(layers, CHANNELS, strict=True):
        assert isinstance(layer.data, da.Array)
        assert layer.data.shape == (40, SIZE, SIZE) and layer.data.chunks[0][0] == 8
        meta = layer.metadata["deparray"]
        assert meta["channel"] == channel and meta["lazy"]["chunk_cells"] == 8
        assert meta["labels"] == [truth[cid][0] for cid in meta["cell_ids"]]
        assert len(meta["original_shapes"]) == 40
        low, high = layer.contrast_limits
        assert low < high
    viewer.dims.set_current_step(0, 27)
    cell_id = layers[0].metadata["deparray"]["cell_ids"][27]
    expected = tifffile.imread(folder / f"{cell_id}.tif", key=0)  # page 0: BF
    np.testing.assert_array_equal(np.asarray(layers[0].data[27]), expected)


# --------------------------------------------------------------------------------------------
# issue 21: files that name their planes otherwise than by a channel; unknown channel names


def _one_file_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    return folder / name


def test_a_gimp_page_name_stays_the_layer_name_beside_its_role(tmp_path) -> None:
    path = _one_file_folder(tmp_path, "img.tif")
    plane = np.arange(256, dtype="uint16").reshape(16, 16)
    tifffile.imwrite(path, plane, extratags=[(285, "s", 0, "Background", True)])
    ((data, kwargs, _),) = read_deparray(str(path.parent))
    meta = kwargs["metadata"]["deparray"]
    assert kwargs["name"] == "img :: Background (as BF)"  # one cell: named after it
    assert meta["channel"] == "BF"  # the role the classifier reads
    assert meta["plane_names"] == ["Background"]
    assert "'Background'" in meta["channel_note"] and "bright-field" in meta["channel_note"]
    np.testing.assert_array_equal(data, plane)


def test_imagej_position_labels_stay_the_layer_names(tmp_path) -> None:
    path = _one_file_folder(tmp_path, "img.tif")
    labels = ["c:1/2 z:30/64 t:1/68 - 4", "c:2/2 z:30/64 t:1/68 - 4"]
    data = np.arange(2 * 16 * 16, dtype="uint8").reshape(2, 16, 16)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "CYX", "Labels": labels})
    layers = read_deparray(str(path))
    assert [kw["name"] for _, kw, _ in layers] == [
        f"img :: {labels[0]} (as BF)",
        f"img :: {labels[1]} (as DAPI)",
    ]
    assert [kw["metadata"]["deparray"]["channel"] for _, kw, _ in layers] == ["BF", "DAPI"]


def test_channel_names_in_the_file_keep_the_plain_layer_names(tmp_path) -> None:
    """DEPArray-like files whose page names ARE channel names: `<stem> :: <channel>`."""
    path = tmp_path / "cell0001.tif"
    with tifffile.TiffWriter(path) as tif:
        for value, name in ((10, "BF"), (20, "Hoechst"), (30, "Foo")):
            tif.write(np.full((16, 16), value, "uint16"), extratags=[(285, "s", 0, name, True)])
    layers = read_deparray(str(path))
    assert [kw["name"] for _, kw, _ in layers] == [
        "cell0001 :: BF",
        "cell0001 :: DAPI",
        "cell0001 :: Foo",
    ]
    assert all("plane_names" not in kw["metadata"]["deparray"] for _, kw, _ in layers)


IMC_NAMES = ["191Ir", "193Ir", "Pt195"]


def _imc_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sample.ome.tif"
    data = np.random.default_rng(0).integers(0, 100, (3, 32, 32)).astype("float32")
    metadata = {"axes": "CYX", "Channel": {"Name": IMC_NAMES}}
    tifffile.imwrite(path, data, metadata=metadata, ome=True)
    return path


def test_unknown_channel_names_are_named_in_the_refusal(tmp_path) -> None:
    from napari_deparray_ctc.core.io.sniff import explain_claim

    path = _imc_file(tmp_path / "imc")
    assert napari_get_reader(str(path)) is None  # napari's own reader opens it
    claimed, reason = explain_claim(str(path))
    assert not claimed
    assert "neither its name nor its metadata names a channel" not in reason
    assert all(name in reason for name in IMC_NAMES)
    assert "channels.csv" in reason


@pytest.mark.parametrize("opened", ["file", "folder"])
def test_a_channel_map_opens_unknown_channel_names_as_cells(tmp_path, opened) -> None:
    path = _imc_file(tmp_path / "imc")
    (path.parent / "channels.csv").write_text("token,name\n191Ir,DAPI\nPt195,BF\n")
    target = str(path if opened == "file" else path.parent)
    assert napari_get_reader(target) is read_deparray
    layers = read_deparray(target)
    channels = [kw["metadata"]["deparray"]["channel"] for _, kw, _ in layers]
    assert sorted(channels) == ["193Ir", "BF", "DAPI"]
    by_channel = {kw["metadata"]["deparray"]["channel"]: data for data, kw, _ in layers}
    reference = tifffile.imread(path)
    np.testing.assert_array_equal(by_channel["BF"], reference[2])
    np.testing.assert_array_equal(by_channel["DAPI"], reference[0])


def test_a_path_not_claimed_is_declined_silently_with_the_reason_logged(tmp_path, caplog):
    """Issue 19: napari does not tell a reader whether the user chose it, so a path the plugin
    cannot read is declined (``None``), never refused with an error; the reason is logged."""
    import logging

    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = np.random.default_rng(2).integers(0, 255, (64, 64, 3)).astype("uint8")
    tifffile.imwrite(folder / "holiday.tif", rgb, photometric="rgb")
    with caplog.at_level(logging.INFO, logger="napari_deparray_ctc.napari.reader"):
        assert napari_get_reader(str(folder)) is None
    assert "holiday.tif" in caplog.text and "RGB colour image" in caplog.text


def test_the_reader_probe_does_not_look_up_the_call_stack() -> None:
    import inspect

    import napari_deparray_ctc.napari.reader as reader_module

    assert "_getframe" not in inspect.getsource(reader_module)
