"""Structured fuzzing of the TIFF reading path (hypothesis).

Each example writes one TIFF with tifffile from generated parameters (page count, shape,
dtype, samples per pixel, photometric interpretation, compression, predictor, tiles, byte
order, BigTIFF, OME / ImageJ / plain writers, and extra tags: PageName, ImageDescription with
channel names, OME-XML snippets, ImageJ headers, shaped JSON or junk), then damages it
(truncation, flipped bytes, zeroed ranges: any mix) and reads it back through every public
entry point of :mod:`napari_deparray_ctc.core.io` and the napari reader probe:

* ``is_probably_deparray`` and ``napari_get_reader`` never raise;
* ``discover_cells`` / ``read_cell`` / ``iter_cells`` / ``read_export`` either succeed or raise
  :class:`~napari_deparray_ctc.core.io.DeparrayReadError` (anything else is a bug);
* a successful read gives well-formed cells (2-D planes of the declared shape, at least one channel,
  integer or float pixels, at least one finite value per float channel);
* the damaged file beside a good cell in a folder never stops the good cell from opening;
* no example takes longer than :data:`EXAMPLE_LIMIT_S` (hang guard).

The normal run is derandomized (the same examples every time) and modest; the ``slow`` run
explores many more.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from reliability_helpers import good_planes, python_env, write_multipage

from napari_deparray_ctc.core import io
from napari_deparray_ctc.core.io import (
    MIN_SIDE_PX,
    DeparrayReadError,
    discover_cells,
    is_probably_deparray,
    iter_cells,
    read_cell,
    read_export,
)

#: seconds one example may take (writing, damaging and reading a few kB): the per-file budget
EXAMPLE_LIMIT_S = 30
#: examples of the randomized deep run in CI; ``DEPARRAY_DEEP_FUZZ_EXAMPLES=10000`` by hand
DEEP_EXAMPLES = int(os.environ.get("DEPARRAY_DEEP_FUZZ_EXAMPLES", "600"))

DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64")
COMPRESSIONS = (None, "zlib", "lzw", "packbits", "adobe_deflate", "zstd", "lzma", "jpeg")
CHANNEL_NAMES = ("BF", "DAPI", "PE", "APC", "FITC", "Bright-field", "Hoechst", "Foo", "", "Ch3")
FILE_NAMES = ("cell0001.tif", "cell0001_BF.tif", "stack_DAPI.tif", "run.tif", "x.ome.tif")


def _ome_snippet(names: list[str], size_c: int, size_t: int) -> str:
    channels = "".join(f'<Channel ID="Channel:0:{i}" Name="{n}"/>' for i, n in enumerate(names))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" '
        f'SizeX="16" SizeY="16" SizeC="{size_c}" SizeZ="1" SizeT="{size_t}" '
        'PhysicalSizeX="0.5">'
        f"{channels}<TiffData/></Pixels></Image></OME>"
    )


ascii_text = st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=40)

descriptions = st.one_of(
    st.none(),
    st.sampled_from(CHANNEL_NAMES),
    st.builds(
        _ome_snippet,
        st.lists(st.sampled_from(CHANNEL_NAMES), max_size=4),
        st.integers(0, 10**9),
        st.integers(0, 10**6),
    ),
    st.sampled_from(
        [
            "ImageJ=1.54f\nimages=3\nchannels=3\nhyperstack=true\nmode=composite\n",
            "ImageJ=1.11a\nimages=999999999\nslices=999999999\n",
            '{"shape": [999999, 999999, 2]}',
            '{"shape": [2, 16, 16]}',
            '{"shape": "nonsense"}',
            "<OME><Image><Pixels SizeC='-1'>",
            "\x00\x01\x02",
        ]
    ),
    ascii_text,
)


@dataclass
class PageSpec:
    shape: tuple[int, ...]
    dtype: str
    samples: int  # 1 = grey, 3 = RGB-like, 2/4 = extra samples
    planar: str  # "contig" (YXS) or "separate" (SYX)
    photometric: str
    compression: str | None
    predictor: bool
    tile: tuple[int, int] | None
    page_name: str | None
    description: str | None


IMAGEJ_DTYPES = ("uint8", "uint16", "float32")


@st.composite
def page_specs(draw, realistic: bool, writer: str) -> PageSpec:
    """One page: ``realistic`` pages are cell-like grey planes (the reader should read them);
    the others are anything tifffile writes (the reader should read or refuse them)."""
    dtypes = IMAGEJ_DTYPES if writer == "imagej" else DTYPES
    if realistic:
        samples, lead = 1, ()
        dtype = draw(st.sampled_from(("uint8", "uint16", "int16", "float32")))
        photometric = "minisblack"
        side = st.integers(8, 48)
    else:
        samples = draw(st.sampled_from((1, 1, 1, 2, 3, 4)))
        dtype = draw(st.sampled_from(dtypes))
        if samples == 3:
            photometric = draw(st.sampled_from(("rgb", "minisblack")))
        elif samples == 1 and dtype in ("uint8", "uint16"):
            photometric = draw(st.sampled_from(("minisblack", "miniswhite", "palette")))
        else:
            photometric = draw(st.sampled_from(("minisblack", "miniswhite")))
        lead = draw(st.sampled_from([(), (), (2,), (4,), (3, 2), (2, 2, 2)]))
        side = st.one_of(*[st.integers(4, 48)] * 4, st.integers(1, 3))  # mostly cell-sized
    if writer == "imagej":
        dtype = dtype if dtype in IMAGEJ_DTYPES else "uint16"
    compression = draw(st.sampled_from(COMPRESSIONS))
    if compression == "jpeg" and not (dtype == "uint8" and photometric in ("minisblack", "rgb")):
        compression = "zlib"  # tifffile/imagecodecs: JPEG needs 8-bit grey or RGB
    height, width = draw(side), draw(side)
    return PageSpec(
        shape=(*lead, height, width),
        dtype=dtype,
        samples=samples,
        planar="contig" if writer == "imagej" else draw(st.sampled_from(("contig", "separate"))),
        photometric=photometric,
        compression=compression,
        predictor=compression not in (None, "jpeg", "packbits") and draw(st.booleans()),
        tile=draw(st.sampled_from([None, None, (16, 16), (32, 16)])),
        page_name=draw(st.one_of(st.none(), st.sampled_from(CHANNEL_NAMES), ascii_text)),
        description=draw(descriptions),
    )


@dataclass
class FileSpec:
    name: str
    writer: str  # "plain", "ome" or "imagej"
    byteorder: str
    bigtiff: bool
    shaped: bool  # tifffile's own JSON shape description
    pages: list[PageSpec]


@dataclass
class Damage:
    truncate: float | None  # keep this fraction of the bytes
    flips: list[tuple[float, int]]  # (relative position, xor mask)
    zeroed: tuple[float, float] | None  # (relative start, relative length)
    header_flips: list[tuple[int, int]] = field(default_factory=list)  # (byte < 600, xor mask)
    # (byte < 64 of the first strip or tile, xor mask): a codec stream's own header (JPEG
    # SOF, PNG IHDR...), where a flip declared the 65,535² px frame of the issue 15 blow-up
    strip_flips: list[tuple[int, int]] = field(default_factory=list)


@st.composite
def file_specs(draw) -> FileSpec:
    writer = draw(st.sampled_from(("plain", "plain", "plain", "ome", "imagej")))
    realistic = draw(st.integers(0, 9)) < 6
    first = draw(page_specs(realistic, writer))
    pages = [first]
    for _ in range(draw(st.integers(0, 4))):
        page = draw(page_specs(realistic, writer))
        if realistic or draw(st.booleans()):  # the first page's layout, other tags
            page.shape, page.dtype, page.samples = first.shape, first.dtype, first.samples
            page.photometric, page.planar = first.photometric, first.planar
            page.compression, page.predictor = first.compression, first.predictor
        pages.append(page)
    return FileSpec(
        name=draw(st.sampled_from(FILE_NAMES)),
        writer=writer,
        byteorder=draw(st.sampled_from(("<", ">"))),
        bigtiff=draw(st.booleans()),
        shaped=draw(st.booleans()),
        pages=pages,
    )


damages = st.one_of(
    st.builds(Damage, truncate=st.floats(0.001, 1.0), flips=st.just([]), zeroed=st.none()),
    st.builds(
        Damage,
        truncate=st.one_of(st.none(), st.floats(0.5, 1.0)),
        flips=st.lists(
            st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), max_size=6
        ),
        zeroed=st.one_of(st.none(), st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 0.3))),
    ),
    # the first IFD (tags: sizes, offsets, counts) sits in the first few hundred bytes
    st.builds(
        Damage,
        truncate=st.none(),
        flips=st.just([]),
        zeroed=st.none(),
        header_flips=st.lists(st.tuples(st.integers(0, 599), st.integers(1, 255)), max_size=4),
    ),
    st.builds(
        Damage,
        truncate=st.none(),
        flips=st.just([]),
        zeroed=st.none(),
        strip_flips=st.lists(
            st.tuples(st.integers(0, 63), st.integers(1, 255)), min_size=1, max_size=4
        ),
    ),
)


def _pixels(page: PageSpec, rng: np.random.Generator) -> np.ndarray:
    shape = page.shape
    if page.samples > 1:
        lead, (height, width) = shape[:-2], shape[-2:]
        if page.planar == "contig":
            shape = (*lead, height, width, page.samples)
        else:
            shape = (*lead, page.samples, height, width)
    dtype = np.dtype(page.dtype)
    if dtype.kind == "f":
        data = rng.normal(100.0, 30.0, shape)
        data[rng.random(shape) < 0.05] = np.nan
        return data.astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def write_tiff(path: Path, spec: FileSpec, seed: int) -> None:
    """Write ``spec`` with tifffile (raises for combinations tifffile refuses)."""
    rng = np.random.default_rng(seed)
    kwargs = {"byteorder": spec.byteorder, "bigtiff": spec.bigtiff}
    if spec.writer == "imagej":
        kwargs = {"imagej": True}
    elif spec.writer == "ome":
        kwargs["ome"] = True
    with tifffile.TiffWriter(path, **kwargs) as tif:
        for page in spec.pages:
            data = _pixels(page, rng)
            options: dict = {
                "photometric": page.photometric,
                "compression": page.compression,
                "tile": page.tile,
            }
            if page.samples > 1:
                options["planarconfig"] = page.planar
            if page.predictor:
                options["predictor"] = True
            if page.photometric == "palette":
                options["colormap"] = rng.integers(0, 65535, (3, 2 ** (8 * data.itemsize)))
            if page.page_name is not None:
                options["extratags"] = [(285, "s", 0, page.page_name, True)]
            if spec.writer == "plain":
                if page.description is not None:
                    options["description"] = page.description
                if not spec.shaped:
                    options["metadata"] = None
            elif spec.writer == "ome" and page.page_name and len(page.shape) == 2:
                options["metadata"] = {"axes": "YX", "Channel": {"Name": [page.page_name]}}
            tif.write(data, **options)


def _first_data_offset(path: Path) -> int | None:
    try:
        with tifffile.TiffFile(path) as tif:
            offsets = tif.pages.first.dataoffsets
            return int(offsets[0]) if offsets else None
    except Exception:
        return None


def damage(path: Path, how: Damage) -> None:
    start = _first_data_offset(path) if how.strip_flips else None
    content = bytearray(path.read_bytes())
    size = len(content)
    for offset, mask in how.strip_flips:
        if start is not None and start + offset < size:
            content[start + offset] ^= mask
    for position, mask in how.flips:
        content[int(position * size)] ^= mask
    for offset, mask in how.header_flips:
        if offset < size:
            content[offset] ^= mask
    if how.zeroed is not None:
        start = int(how.zeroed[0] * size)
        content[start : start + int(how.zeroed[1] * size)] = bytes(
            len(content[start : start + int(how.zeroed[1] * size)])
        )
    if how.truncate is not None:
        del content[int(how.truncate * size) :]
    path.write_bytes(bytes(content))


# --------------------------------------------------------------------------------------------
# the oracle


def _check_cell(cell: io.Cell) -> None:
    assert cell.channels, "a cell without channels"  # BF is optional (issue 16)
    assert len(cell.original_shape) == 2
    for name, plane in cell.channels.items():
        assert isinstance(plane, np.ndarray) and plane.ndim == 2, (name, np.shape(plane))
        assert plane.shape == tuple(cell.original_shape), (name, plane.shape)
        assert min(plane.shape) >= MIN_SIDE_PX
        assert plane.dtype.kind in "uif" and plane.dtype.isnative, plane.dtype
        if plane.dtype.kind == "f":
            assert np.isfinite(plane).any(), name


def _read_or_refuse(call) -> object | None:
    """``call()``'s result, or ``None`` if it raised DeparrayReadError; anything else raises."""
    try:
        return call()
    except DeparrayReadError as error:
        assert error.path and error.reason, repr(error)
        assert "not enough memory" not in error.reason, f"a tiny file exhausted memory: {error}"
        str(error).encode("utf-8")
        return None


#: extra address space an example may use (its files are a few kB; a damaged header must not
#: make the reader allocate more than this)
EXAMPLE_MEMORY_BYTES = 1024**3


@contextlib.contextmanager
def _bounded_memory(extra: int = EXAMPLE_MEMORY_BYTES):
    """Cap this process's address space at its current size + ``extra`` (Linux), so that a
    runaway allocation fails with MemoryError inside the example (and is reported as a bug)
    instead of driving the machine out of memory."""
    try:
        import resource

        with open("/proc/self/statm") as handle:
            current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        yield
        return
    limit = current + extra
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def exercise(path: Path, good_folder: Path) -> None:
    """Every public reading entry point on one (possibly damaged) file."""
    from napari_deparray_ctc.napari.reader import napari_get_reader, read_deparray

    assert isinstance(is_probably_deparray(path), bool)
    assert isinstance(is_probably_deparray(path.parent), bool)
    assert napari_get_reader(str(path)) in (None, read_deparray)

    export = _read_or_refuse(lambda: read_export(path))
    if export is not None:
        assert export.cells
        for cell in export.cells:
            _check_cell(cell)

    sources, skipped = discover_cells(path)  # never raises for a file
    assert all(isinstance(reason, str) for _, reason in skipped)
    for source in sources[:8]:
        cell = _read_or_refuse(lambda source=source: read_cell(source))
        if cell is not None:
            _check_cell(cell)
    io.release_open_files()

    streamed = []
    for cell in iter_cells(path, on_skip=lambda p, r: streamed.append((p, r))):
        _check_cell(cell)

    # beside a good cell, the damaged file never stops the good one from opening
    shutil.copyfile(path, good_folder / path.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_folder = read_export(good_folder)
    assert "good0000" in in_folder.cell_ids, in_folder.skipped
    for cell in in_folder.cells:
        _check_cell(cell)


class _ExampleTimeout(Exception):
    pass


def _run_one(tmp_path: Path, spec: FileSpec, how: Damage, seed: int) -> None:
    folder = tmp_path / f"ex{seed}"
    folder.mkdir()
    path = folder / spec.name
    try:
        write_tiff(path, spec, seed)
    except Exception as exc:  # a combination tifffile itself refuses: not our input
        note(f"tifffile refused to write: {exc!r}")
        assume(False)
    damage(path, how)
    good_folder = folder / "export"
    good_folder.mkdir()
    write_multipage(good_folder / "good0000.tif", good_planes(0), ["BF", "DAPI"])

    def on_alarm(signum, frame):
        raise _ExampleTimeout(f"one example took more than {EXAMPLE_LIMIT_S} s: {spec} {how}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(EXAMPLE_LIMIT_S)
    try:
        with _bounded_memory():
            exercise(path, good_folder)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        io.release_open_files()


COMMON = {
    "deadline": None,
    "database": None,
    "derandomize": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
}


@pytest.mark.time_limit(0)  # each example has its own guard
@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
@settings(max_examples=150, **COMMON)
@given(spec=file_specs(), how=damages, seed=st.integers(0, 2**16))
def test_fuzzed_tiffs_are_read_or_refused_cleanly(tmp_path_factory, spec, how, seed) -> None:
    _run_one(tmp_path_factory.mktemp("fuzz"), spec, how, seed)


@pytest.mark.slow
@pytest.mark.time_limit(0)
@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
@settings(max_examples=DEEP_EXAMPLES, **{**COMMON, "derandomize": False})
@given(spec=file_specs(), how=damages, seed=st.integers(0, 2**16))
def test_fuzzed_tiffs_deeper(tmp_path_factory, spec, how, seed) -> None:
    """Random (not derandomized) examples, in CI again: the 15 GB case that made this a manual
    run was a JPEG stream declaring a 65,535 × 65,535 px frame, now refused before decoding
    (``core/io/codec_frames.py``), and every example runs under an address-space cap
    (:func:`_bounded_memory`) and a time limit, so a new blow-up fails the example instead of
    the machine. ``DEPARRAY_DEEP_FUZZ_EXAMPLES`` sets the count (a hand run: 10,000)."""
    _run_one(tmp_path_factory.mktemp("fuzz-deep"), spec, how, seed)


@pytest.mark.time_limit(0)
@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
@settings(max_examples=100, **COMMON)
@given(spec=file_specs(), seed=st.integers(0, 2**16))
def test_undamaged_fuzzed_tiffs_are_read_or_refused_cleanly(tmp_path_factory, spec, seed) -> None:
    """Valid but unusual files (no damage): the reader's layout logic, not its error handling."""
    _run_one(tmp_path_factory.mktemp("fuzz-valid"), spec, Damage(None, [], None), seed)


# --------------------------------------------------------------------------------------------
# regressions: what fuzzing found (fixed in core/io/)


REGRESSION_CHILD = """
import sys, time
import numpy as np, tifffile
from napari_deparray_ctc.core.io import DeparrayReadError, is_probably_deparray, read_export

path, description = sys.argv[1], sys.argv[2]
tifffile.imwrite(path, np.ones((16, 16), "uint16"), description=description, metadata=None)
start = time.perf_counter()
assert is_probably_deparray(path) in (True, False)
try:
    read_export(path)
    print("READ")
except DeparrayReadError as error:
    print("REFUSED", error.reason)
print("SECONDS", time.perf_counter() - start)
"""


def _limited_memory() -> None:  # in the child: a regression fails instead of swapping
    import resource

    limit = 3 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS")
@pytest.mark.parametrize(
    ("description", "reason"),
    [
        pytest.param(
            _ome_snippet(["BF"], 10**7, 1), "corrupt OME-XML metadata", id="ome-10M-channels"
        ),
        pytest.param(
            _ome_snippet(["BF"], 300_000, 10**6), "corrupt OME-XML metadata", id="ome-3e11-planes"
        ),
        pytest.param('{"shape": [99999999, 16, 16]}', "corrupt metadata", id="shaped-1e8-planes"),
    ],
)
def test_metadata_declaring_absurd_plane_counts_is_refused_quickly(
    tmp_path, description, reason
) -> None:
    """A 1 kB file whose metadata declares 10**7-10**11 planes: tifffile expanded the OME series
    into lists that long (minutes, gigabytes) and the reader made 10**8 cells of the shaped one
    (out of memory). Both are refused from the header now, at once."""
    result = subprocess.run(
        [sys.executable, "-c", REGRESSION_CHILD, str(tmp_path / "cell0001.tif"), description],
        capture_output=True,
        text=True,
        timeout=120,
        env=python_env(),
        preexec_fn=_limited_memory,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"REFUSED {reason}" in result.stdout, result.stdout
    assert float(result.stdout.split("SECONDS")[-1]) < 5.0
