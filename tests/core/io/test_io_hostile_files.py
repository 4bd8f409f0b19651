"""Hostile files (issue 21): looping and endless IFD chains, named pipes and devices.

Every case that used to hang runs in a child process with a time limit: the test fails (it
does not hang) if the reader blocks again. The child answers the probe, reads the file alone
and reads its folder beside a good cell, and prints what happened.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hostile_tiffs import (
    fifo,
    long_chain_tiff,
    looping_subifd_tiff,
    looping_tiff,
    overlapping_chain_tiff,
    run_child,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="named pipes and /dev: POSIX")

#: the probe's own answer must come within this many seconds (measured in the child)
PROBE_LIMIT_S = 1.0

CHILD = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.simplefilter("ignore")
    from napari_deparray_ctc.core.io import DeparrayReadError, discover_cells, read_export
    from napari_deparray_ctc.napari.reader import napari_get_reader, read_deparray
    path, folder = sys.argv[1], sys.argv[2]
    out = {}
    start = time.perf_counter()
    out["claimed"] = napari_get_reader(path) is read_deparray
    out["probe_s"] = time.perf_counter() - start
    start = time.perf_counter()
    napari_get_reader(folder)
    out["folder_probe_s"] = time.perf_counter() - start
    try:
        read_export(path)
        out["alone"] = None
    except DeparrayReadError as exc:
        out["alone"] = [exc.path, exc.reason]
    sources, skipped = discover_cells(folder)
    export = read_export(folder)
    out["folder_cells"] = [cell.cell_id for cell in export.cells]
    out["folder_skipped"] = export.skipped
    print("RESULT", json.dumps(out))
    """
)


def _good_cell(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    planes = np.stack([np.full((16, 16), v, "uint16") for v in (100, 200)])
    tifffile.imwrite(folder / "cell0001.tif", planes, photometric="minisblack", metadata=None)


def _run(path: Path, folder: Path) -> dict:
    result = run_child(CHILD, path, folder)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _hostile(build, name: str, tmp_path: Path) -> tuple[Path, Path]:
    alone = build(tmp_path / "alone" / name)
    folder = tmp_path / "export"
    _good_cell(folder)
    build(folder / name)
    return alone, folder


LOOPS = {
    "first IFD points at itself": lambda p: looping_tiff(p, pages=1, back_to=0),
    "second IFD points back at the first": lambda p: looping_tiff(p, pages=2, back_to=0),
    "fourth IFD points back at the second": lambda p: looping_tiff(p, pages=4, back_to=1),
    "BigTIFF loop": lambda p: looping_tiff(p, pages=3, back_to=1, bigtiff=True),
    "SubIFD points at itself": looping_subifd_tiff,
}


@pytest.mark.parametrize("name", ["cell0099.tif", "holiday.tif"])
@pytest.mark.parametrize("case", sorted(LOOPS))
def test_a_looping_ifd_chain_is_refused_quickly(case: str, name: str, tmp_path) -> None:
    alone, folder = _hostile(LOOPS[case], name, tmp_path)
    out = _run(alone, folder)
    assert out["probe_s"] < PROBE_LIMIT_S and out["folder_probe_s"] < PROBE_LIMIT_S, out
    # claimed whatever its name: napari's own reader would follow the loop forever
    assert out["claimed"] is True
    path, reason = out["alone"]
    assert os.path.basename(path) == name
    assert "its chain of image directories loops back on itself" in reason
    assert out["folder_cells"] == ["cell0001"]
    ((skipped_path, skipped_reason),) = out["folder_skipped"]
    assert skipped_path.endswith(name) and "loops back on itself" in skipped_reason


@pytest.mark.parametrize("name", ["cell0099.tif", "holiday.tif"])
def test_overlapping_directories_are_refused(name: str, tmp_path) -> None:
    alone, folder = _hostile(overlapping_chain_tiff, name, tmp_path)
    out = _run(alone, folder)
    assert out["probe_s"] < PROBE_LIMIT_S, out
    assert out["claimed"] is True  # found within the probe's budget, whatever the name
    assert "image directories overlap each other" in out["alone"][1]
    assert out["folder_cells"] == ["cell0001"]


def test_a_very_long_chain_is_answered_quickly_and_refused_in_words(tmp_path) -> None:
    """200,000 empty directories, none overlapping: the probe does not walk them all."""
    alone, folder = _hostile(long_chain_tiff, "cell0099.tif", tmp_path)
    out = _run(alone, folder)
    assert out["probe_s"] < PROBE_LIMIT_S and out["folder_probe_s"] < PROBE_LIMIT_S, out
    assert out["claimed"] is True  # named like a cell: the reader says what is wrong
    assert out["alone"] is not None and out["alone"][1]
    assert out["folder_cells"] == ["cell0001"]


def test_a_long_real_stack_opens_and_the_probe_stays_quick(tmp_path) -> None:
    """3,000 pages (more than the probe inspects): claimed by its name, read in full."""
    path = tmp_path / "stack_BF.tif"
    data = np.arange(3000 * 8 * 8, dtype="uint16").reshape(3000, 8, 8) % 1000
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None)
    code = textwrap.dedent(
        """
        import sys, time
        from napari_deparray_ctc.napari.reader import napari_get_reader, read_deparray
        start = time.perf_counter()
        claimed = napari_get_reader(sys.argv[1]) is read_deparray
        print("RESULT", claimed, time.perf_counter() - start)
        """
    )
    result = run_child(code, path)
    words = result.stdout.split()
    assert words[words.index("RESULT") + 1] == "True", result.stdout + result.stderr
    assert float(words[words.index("RESULT") + 2]) < PROBE_LIMIT_S
    from napari_deparray_ctc.core.io import read_export

    export = read_export(path)
    assert len(export.cells) == 3000
    np.testing.assert_array_equal(export.cells[2999].channels["BF"], data[2999])


def test_a_real_pyramid_with_sub_ifds_is_not_taken_for_a_loop(tmp_path) -> None:
    """SubIFDs listed by a page and chained to each other are shared, not a loop."""
    from napari_deparray_ctc.core.io.ifd_chain import survey_tiff

    path = tmp_path / "cell0001.ome.tif"
    data = np.arange(2 * 64 * 64, dtype="uint16").reshape(2, 64, 64)
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(data, subifds=2, metadata={"axes": "CYX"})
        writer.write(data[:, ::2, ::2], subfiletype=1)
        writer.write(data[:, ::4, ::4], subfiletype=1)
    survey = survey_tiff(str(path))
    assert survey.main_ifds == 2 and survey.sub_ifds == 4


# --------------------------------------------------------------------------------------------
# named pipes, sockets, devices


SPECIAL_CHILD = textwrap.dedent(
    """
    import json, sys, time, warnings
    warnings.simplefilter("ignore")
    from napari_deparray_ctc.core.io import DeparrayReadError, discover_cells, read_export
    from napari_deparray_ctc.napari.reader import napari_get_reader, read_deparray
    out = {}
    for path in sys.argv[1:]:
        start = time.perf_counter()
        claimed = napari_get_reader(path) is read_deparray
        elapsed = time.perf_counter() - start
        try:
            export = read_export(path)
            result = [[c.cell_id for c in export.cells], export.skipped]
        except DeparrayReadError as exc:
            result = [exc.path, exc.reason]
        out[path] = [claimed, elapsed, result]
    print("RESULT", json.dumps(out))
    """
)


def _special_run(*paths: Path) -> dict:
    result = run_child(SPECIAL_CHILD, *paths)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_a_named_pipe_named_like_a_cell_is_refused_without_being_opened(tmp_path) -> None:
    pipe = fifo(tmp_path / "cell0099.tif")
    out = _special_run(pipe)
    claimed, elapsed, (path, reason) = out[str(pipe)]
    assert elapsed < PROBE_LIMIT_S
    assert claimed is True  # napari's own reader would wait on it forever
    assert path == str(pipe)
    assert "not a regular file: it is a named pipe (FIFO)" in reason


def test_pipes_and_devices_in_a_folder_are_skipped_with_their_reason(tmp_path) -> None:
    folder = tmp_path / "export"
    _good_cell(folder)
    fifo(folder / "cell0002.tif")
    fifo(folder / "cell0003_BF.tif")
    fifo(folder / "labels.csv")
    fifo(folder / "channels.csv")
    (folder / "cell0004.tif").symlink_to(os.devnull)  # a character device
    if os.path.exists("/dev/zero"):
        (folder / "cell0005.tif").symlink_to("/dev/zero")
    fifo(tmp_path / "elsewhere" / "pipe")
    (folder / "cell0006_DAPI.tif").symlink_to(tmp_path / "elsewhere" / "pipe")
    out = _special_run(folder)
    claimed, elapsed, (cells, skipped) = out[str(folder)]
    assert claimed is True and elapsed < PROBE_LIMIT_S
    assert cells == ["cell0001"]
    reasons = {os.path.basename(path): reason for path, reason in skipped}
    expected = {"cell0002.tif", "cell0003_BF.tif", "labels.csv", "channels.csv", "cell0004.tif"}
    expected |= {"cell0006_DAPI.tif"} | ({"cell0005.tif"} if os.path.exists("/dev/zero") else set())
    assert set(reasons) == expected
    assert "named pipe (FIFO)" in reasons["cell0002.tif"]
    assert "character device" in reasons["cell0004.tif"]
    assert "a symbolic link to a named pipe (FIFO)" in reasons["cell0006_DAPI.tif"]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_link_to_dev_zero_opened_directly_is_refused(tmp_path) -> None:
    link = tmp_path / "cell0001.tif"
    link.symlink_to("/dev/zero")
    out = _special_run(link)
    claimed, elapsed, (path, reason) = out[str(link)]
    assert claimed is True and elapsed < PROBE_LIMIT_S and path == str(link)
    assert "symbolic link to a character device (/dev/zero)" in reason


def test_a_channel_map_that_is_a_pipe_is_refused_in_words(tmp_path) -> None:
    from napari_deparray_ctc.core.channels import ChannelMapError, load_channel_map

    pipe = fifo(tmp_path / "channels.csv")
    with pytest.raises(ChannelMapError, match="not a regular file"):
        load_channel_map(pipe)
