"""The synthetic DEPArray-like export generator (core.synth)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_deparray_ctc.core.synth import (
    CHANNELS,
    LAYOUTS,
    SUBTYPES,
    Optics,
    SynthCell,
    synth_cells,
    write_export,
)


@pytest.fixture(scope="module")
def population() -> list[SynthCell]:
    """120 cells, half CTC: enough for class-level statistics, under a second."""
    return synth_cells(120, ctc_fraction=0.5, seed=0, image_size=48, n_samples=3)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _cell_region(cell: SynthCell, channel: str) -> float:
    """Signal above background: 99th percentile minus median of a channel."""
    image = cell.channels[channel].astype(np.float64)
    return float(np.percentile(image, 99) - np.median(image))


# ----------------------------------------------------------------- in memory
def test_same_seed_gives_identical_cells():
    a = synth_cells(8, ctc_fraction=0.5, seed=11, image_size=40, n_samples=2)
    b = synth_cells(8, ctc_fraction=0.5, seed=11, image_size=40, n_samples=2)
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    assert [(c.label, c.subtype, c.sample) for c in a] == [
        (c.label, c.subtype, c.sample) for c in b
    ]
    for ca, cb in zip(a, b, strict=True):
        assert ca.params == cb.params
        for name in CHANNELS:
            np.testing.assert_array_equal(ca.channels[name], cb.channels[name])


def test_different_seed_gives_different_cells():
    a = synth_cells(4, ctc_fraction=0.5, seed=1, image_size=40)
    b = synth_cells(4, ctc_fraction=0.5, seed=2, image_size=40)
    for ca, cb in zip(a, b, strict=True):
        assert not np.array_equal(ca.channels["BF"], cb.channels["BF"])
    assert [c.diameter_um for c in a] != [c.diameter_um for c in b]


def test_cells_have_the_four_uint16_channels_and_valid_metadata():
    cells = synth_cells(20, ctc_fraction=0.25, seed=3, image_size=40, n_samples=2)
    assert [c.cell_id for c in cells] == [f"cell{i:04d}" for i in range(20)]
    assert sum(c.label == "CTC" for c in cells) == 5  # round(20 * 0.25)
    assert {c.sample for c in cells} == {"S01", "S02"}
    top = 2 ** Optics.default().bit_depth - 1
    for cell in cells:
        assert tuple(cell.channels) == CHANNELS
        assert cell.subtype in SUBTYPES[cell.label]
        assert cell.pixel_size_um == pytest.approx(Optics.default().pixel_size_um)
        for image in cell.channels.values():
            assert image.dtype == np.uint16
            assert image.shape == (40, 40)
            assert image.max() <= top
        # bright-field is a real image: a background level with noise, not a constant
        assert cell.channels["BF"].std() > 0


def test_every_ctc_fraction_extreme_works():
    assert {c.label for c in synth_cells(6, ctc_fraction=0.0, seed=0, image_size=32)} == {"WBC"}
    assert {c.label for c in synth_cells(6, ctc_fraction=1.0, seed=0, image_size=32)} == {"CTC"}
    assert synth_cells(0) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},
        {"n": 3, "ctc_fraction": 1.5},
        {"n": 3, "image_size": 8},
        {"n": 3, "n_samples": 0},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        synth_cells(**kwargs)


# ----------------------------------------------------------------- biology
def test_sizes_overlap_so_size_alone_cannot_separate_the_classes(population):
    d = np.array([c.diameter_um for c in population])
    ctc = np.array([c.label == "CTC" for c in population])
    # literature ranges
    assert 7.0 <= d[~ctc].min() and d[~ctc].max() <= 17.0
    assert np.mean((d[ctc] >= 10) & (d[ctc] <= 25)) > 0.8
    assert np.median(d[ctc]) > np.median(d[~ctc])
    # but the distributions overlap: histogram overlap and the best size threshold
    bins = np.arange(6.0, 28.0, 1.0)
    h_ctc, _ = np.histogram(d[ctc], bins, density=True)
    h_wbc, _ = np.histogram(d[~ctc], bins, density=True)
    assert np.minimum(h_ctc, h_wbc).sum() > 0.2
    best = max(np.mean((d > t) == ctc) for t in np.unique(d))
    assert best < 0.92, f"a size threshold separates the classes too well ({best:.2f})"
    assert np.mean((d[ctc] >= d[~ctc].min()) & (d[ctc] <= d[~ctc].max())) > 0.4


def test_markers_ck_positive_cd45_negative_for_ctc_and_the_opposite_for_wbc(population):
    ctc = [c for c in population if c.label == "CTC"]
    wbc = [c for c in population if c.label == "WBC"]
    pe_ctc = np.array([_cell_region(c, "PE") for c in ctc])
    pe_wbc = np.array([_cell_region(c, "PE") for c in wbc])
    apc_ctc = np.array([_cell_region(c, "APC") for c in ctc])
    apc_wbc = np.array([_cell_region(c, "APC") for c in wbc])
    assert pe_ctc.mean() > 5 * pe_wbc.mean()
    assert apc_wbc.mean() > 5 * apc_ctc.mean()
    # per cell, most (not all: CK-dim CTCs exist) are on the right side
    assert np.mean(pe_ctc > np.median(pe_wbc) * 3) > 0.75
    assert np.mean(apc_wbc > np.median(apc_ctc) * 3) > 0.9
    # every cell has a nucleus in DAPI
    assert min(_cell_region(c, "DAPI") for c in population) > 20


def test_dapi_shows_the_nucleus_size(population):
    """The DAPI area above half maximum tracks the drawn nucleus area (DAPI is informative)."""
    measured, drawn = [], []
    for cell in population:
        if cell.params["neighbour"] or cell.params["n_debris"]:
            continue
        dapi = cell.channels["DAPI"].astype(np.float64)
        dapi -= np.median(dapi)
        measured.append(np.sum(dapi > 0.25 * np.percentile(dapi, 99.5)))
        drawn.append(cell.params["nucleus_area_um2"])
    assert len(drawn) > 50
    assert np.corrcoef(measured, drawn)[0, 1] > 0.8


def test_subtypes_follow_their_class(population):
    seen = {c.subtype for c in population}
    assert seen <= set(SUBTYPES["CTC"]) | set(SUBTYPES["WBC"])
    assert {"lymphocyte", "neutrophil", "monocyte", "ctc"} <= seen
    neutrophils = [c for c in population if c.subtype == "neutrophil"]
    assert all(3 <= c.params["n_lobes"] <= 5 for c in neutrophils)
    ctc_nuclei = [c.params["nucleus_area_um2"] for c in population if c.label == "CTC"]
    lymph_nuclei = [c.params["nucleus_area_um2"] for c in population if c.subtype == "lymphocyte"]
    assert np.median(ctc_nuclei) > np.median(lymph_nuclei)


# ----------------------------------------------------------------- optics
def test_shifted_optics_differ_measurably_from_default():
    default = synth_cells(12, ctc_fraction=0.5, seed=4, optics=Optics.default(), image_size=48)
    shifted = synth_cells(12, ctc_fraction=0.5, seed=4, optics=Optics.shifted(), image_size=48)

    def background_and_noise(cells):
        levels, cvs = [], []
        for cell in cells:
            corner = cell.channels["BF"][:8, :8].astype(np.float64)
            levels.append(np.median(cell.channels["BF"]))
            # neighbour differences ignore illumination ramps
            cvs.append(np.median(np.abs(np.diff(corner, axis=1))) / corner.mean())
        return np.median(levels), np.median(cvs)

    def rim_contrast(cells):
        """Mean |I/bg - 1| over the image: the strength of the cell's BF signature."""
        out = []
        for cell in cells:
            bf = cell.channels["BF"].astype(np.float64)
            out.append(np.mean(np.abs(bf / np.median(bf) - 1)))
        return np.median(out)

    level_d, cv_d = background_and_noise(default)
    level_s, cv_s = background_and_noise(shifted)
    assert level_s > 2 * level_d  # another camera scale (16-bit values)
    assert cv_s > 1.3 * cv_d  # fewer photons, more noise
    # same cells, other contrast: the images differ beyond a global scale factor
    assert abs(rim_contrast(shifted) - rim_contrast(default)) > 0.1 * rim_contrast(default)
    assert Optics.shifted().bit_depth == 16 and Optics.default().bit_depth == 12
    # the biology is the same for the same seed
    assert [c.subtype for c in default] == [c.subtype for c in shifted]


def test_optics_jitter_is_seeded_and_optional():
    base = Optics.default()
    assert base.jittered(np.random.default_rng(0), scale=0) is base
    a = base.jittered(np.random.default_rng(5))
    b = base.jittered(np.random.default_rng(5))
    c = base.jittered(np.random.default_rng(6))
    assert a == b and a != c and a != base
    assert a.pixel_size_um == base.pixel_size_um and a.bit_depth == base.bit_depth
    assert set(base.to_dict()) == {f for f in Optics.__dataclass_fields__}


@pytest.mark.parametrize(
    "changes", [{"pixel_size_um": 0}, {"bit_depth": 13}, {"debris_probability": 2.0}]
)
def test_invalid_optics_are_refused(changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        Optics.default().replace(**changes)


def test_samples_get_their_own_optics():
    cells = synth_cells(8, ctc_fraction=0.5, seed=2, image_size=40, n_samples=2)
    bg = {
        s: np.median([np.median(c.channels["BF"]) for c in cells if c.sample == s])
        for s in ("S01", "S02")
    }
    assert abs(bg["S01"] - bg["S02"]) > 5  # per-sample photon budget differs
    flat = synth_cells(8, ctc_fraction=0.5, seed=2, image_size=40, n_samples=2, optics_jitter=0)
    assert {c.params["defocus_um"] != Optics.default().defocus_um for c in flat} == {True}


# ----------------------------------------------------------------- files
EXPECTED_FILES = {
    "multipage": lambda ids, labels: [f"{i}.tif" for i in ids],
    "perchannel": lambda ids, labels: [f"{i}_{ch}.tif" for i in ids for ch in CHANNELS],
    "ome": lambda ids, labels: [f"{i}.ome.tif" for i in ids],
    "classdirs": lambda ids, labels: [f"{lab}/{i}.tif" for i, lab in zip(ids, labels, strict=True)],
    "stack": lambda ids, labels: ["cells.ome.tif"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_write_export_layouts(tmp_path, layout):
    kwargs = {"n_cells": 6, "ctc_fraction": 0.5, "seed": 9, "image_size": 32, "n_samples": 2}
    out = write_export(tmp_path / layout, layout=layout, **kwargs)
    cells = synth_cells(6, 0.5, 9, image_size=32, n_samples=2)
    ids = [c.cell_id for c in cells]
    labels = [c.label for c in cells]
    expected = sorted([*EXPECTED_FILES[layout](ids, labels), "labels.csv"])
    assert sorted(_files(out)) == expected

    with open(out / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["cell_id"], r["label"], r["sample"]) for r in rows] == [
        (c.cell_id, c.label, c.sample) for c in cells
    ]

    px = Optics.default().pixel_size_um
    first = cells[0]
    if layout in ("multipage", "classdirs"):
        path = out / (f"{first.label}/" if layout == "classdirs" else "") / f"{first.cell_id}.tif"
        with tifffile.TiffFile(path) as tif:
            assert [p.tags["PageName"].value for p in tif.pages] == list(CHANNELS)
            assert [p.description for p in tif.pages] == list(CHANNELS)
            for page, name in zip(tif.pages, CHANNELS, strict=True):
                assert page.dtype == np.uint16
                np.testing.assert_array_equal(page.asarray(), first.channels[name])
            x_res = tif.pages[0].tags["XResolution"].value
            assert 1e4 * x_res[1] / x_res[0] == pytest.approx(px)  # px/cm -> µm/px
    elif layout == "perchannel":
        for name in CHANNELS:
            with tifffile.TiffFile(out / f"{first.cell_id}_{name}.tif") as tif:
                assert len(tif.pages) == 1
                assert tif.pages[0].tags["PageName"].value == name
                np.testing.assert_array_equal(tif.pages[0].asarray(), first.channels[name])
    else:  # ome, stack
        name = f"{first.cell_id}.ome.tif" if layout == "ome" else "cells.ome.tif"
        with tifffile.TiffFile(out / name) as tif:
            assert tif.is_ome
            meta = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
            assert [ch["Name"] for ch in meta["Channel"]] == list(CHANNELS)
            assert meta["PhysicalSizeX"] == pytest.approx(px)
            data = tif.series[0].asarray()
            assert data.dtype == np.uint16
            if layout == "ome":
                assert tif.series[0].axes == "CYX"
                expected_data = np.stack([first.channels[ch] for ch in CHANNELS])
            else:
                assert data.shape == (6, 4, 32, 32)
                expected_data = np.stack(
                    [np.stack([c.channels[ch] for ch in CHANNELS]) for c in cells]
                )
            np.testing.assert_array_equal(data, expected_data)


@pytest.mark.parametrize("layout", ["multipage", "ome", "perchannel"])
def test_write_export_is_byte_reproducible(tmp_path, layout):
    kwargs = {"n_cells": 4, "ctc_fraction": 0.5, "image_size": 32, "layout": layout}
    a = _files(write_export(tmp_path / "a", seed=1, **kwargs))
    b = _files(write_export(tmp_path / "b", seed=1, **kwargs))
    c = _files(write_export(tmp_path / "c", seed=2, **kwargs))
    assert a == b
    assert a.keys() == c.keys()
    assert any(a[k] != c[k] for k in a if k.endswith(".tif"))


def test_write_export_compression_keeps_pixels(tmp_path):
    plain = write_export(tmp_path / "plain", 3, 0.5, seed=4, image_size=32)
    packed = write_export(tmp_path / "zlib", 3, 0.5, seed=4, image_size=32, compression="zlib")
    for name in ("cell0000.tif", "cell0002.tif"):
        np.testing.assert_array_equal(tifffile.imread(plain / name), tifffile.imread(packed / name))
        with tifffile.TiffFile(packed / name) as tif:
            assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_write_export_never_overwrites_without_permission(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    keep = out / "mine.txt"
    keep.write_text("precious", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not empty"):
        write_export(out, 3, seed=0, image_size=32)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    write_export(out, 3, seed=0, image_size=32, overwrite=True)
    assert keep.read_text(encoding="utf-8") == "precious"
    assert (out / "labels.csv").is_file()
    with pytest.raises(FileExistsError):
        write_export(keep, 3)
    with pytest.raises(ValueError, match="layout"):
        write_export(tmp_path / "other", 3, layout="zip")
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reader_opens_every_layout(tmp_path, layout):
    """core.io reads back the same cells, channels, labels, samples and pixel size."""
    from napari_deparray_ctc.core.io import read_export

    out = write_export(tmp_path / layout, 5, 0.4, seed=6, layout=layout, image_size=32, n_samples=2)
    cells = {c.cell_id: c for c in synth_cells(5, 0.4, 6, image_size=32, n_samples=2)}
    export = read_export(out)
    assert export.skipped == []
    assert list(export.channels) == list(CHANNELS)
    assert sorted(c.cell_id for c in export.cells) == sorted(cells)
    for read in export.cells:
        truth = cells[read.cell_id]
        assert read.label == truth.label
        assert read.group == truth.sample
        assert read.pixel_size_um == pytest.approx(truth.pixel_size_um)
        for name in CHANNELS:
            np.testing.assert_array_equal(read.channels[name], truth.channels[name])


# ----------------------------------------------------------------- domains
def test_benchmark_domains_differ_from_the_reference():
    from napari_deparray_ctc.core.synth import DOMAINS, domain

    assert set(DOMAINS) >= {
        "reference",
        "hospital_b",
        "defocus",
        "fine_pixels",
        "low_light_8bit",
        "uneven_background",
    }
    assert domain("reference").optics == Optics.default()
    assert domain("low_light_8bit").optics.bit_depth == 8
    with pytest.raises(ValueError, match="unknown domain"):
        domain("mars")
    low = synth_cells(6, 0.5, seed=1, optics=domain("low_light_8bit").optics)
    assert max(int(c.channels["BF"].max()) for c in low) <= 255
    fine = synth_cells(6, 0.5, seed=1, optics=domain("fine_pixels").optics)
    assert {c.pixel_size_um for c in fine} == {0.42}


def test_randomised_instruments_are_seeded_and_vary():
    from napari_deparray_ctc.core.synth import randomised_optics

    a = [randomised_optics(np.random.default_rng(s)) for s in range(20)]
    b = [randomised_optics(np.random.default_rng(s)) for s in range(20)]
    assert a == b
    assert len({o.pixel_size_um for o in a}) == 20 and len({o.bit_depth for o in a}) > 2
    cells = synth_cells(
        12, 0.5, seed=3, n_samples=4, optics_sampler=randomised_optics, biology_jitter=1.0
    )
    assert len({c.pixel_size_um for c in cells}) == 4  # each sample its own instrument
    for cell in cells:
        assert cell.channels["BF"].dtype == np.uint16


def test_biology_jitter_zero_keeps_the_documented_cells():
    plain = synth_cells(6, 0.5, seed=4)
    zero = synth_cells(6, 0.5, seed=4, biology_jitter=0.0)
    jittered = synth_cells(6, 0.5, seed=4, n_samples=1, biology_jitter=1.0)
    for a, b in zip(plain, zero, strict=True):
        np.testing.assert_array_equal(a.channels["BF"], b.channels["BF"])
    assert any(a.diameter_um != c.diameter_um for a, c in zip(plain, jittered, strict=True))
