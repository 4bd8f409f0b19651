"""Tiny TIFF factories for the core reader tests (tifffile only; no dependency on core.synth).

Every plane written by :func:`make_planes` is distinct and seeded, so a test can check that the
reader returns the right pixels under the right channel name: plane ``c`` of cell ``i`` holds a
random pattern plus ``1000 * c + 100 * i`` (scaled into the dtype's range).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import tifffile
from tiff_planes import make_planes


class TiffFactory:
    """Writes tiny cell TIFFs in every supported layout under a base folder."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def _path(self, name: str | Path) -> Path:
        path = self.base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ---- layout 2: one single-channel file per channel
    def per_channel(
        self,
        cell_id: str,
        planes: dict[str, np.ndarray],
        pattern: str = "{cell}_{channel}.tif",
        folder: str = "",
        **write_kwargs,
    ) -> dict[str, Path]:
        out = {}
        for channel, plane in planes.items():
            path = self._path(Path(folder) / pattern.format(cell=cell_id, channel=channel))
            tifffile.imwrite(path, plane, photometric="minisblack", **write_kwargs)
            out[channel] = path
        return out

    # ---- layout 1: one multichannel file per cell
    def pages(
        self,
        name: str,
        planes: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        how: str = "pagename",
        **write_kwargs,
    ) -> Path:
        """Each plane its own page *and* its own series (what many exporters write).

        ``how``: ``"pagename"`` (tag 285), ``"description"`` (ImageDescription) or ``"none"``.
        """
        path = self._path(name)
        with tifffile.TiffWriter(path, byteorder=write_kwargs.pop("byteorder", None)) as tif:
            for index, plane in enumerate(planes):
                kwargs = dict(write_kwargs)
                if names is not None and how == "pagename":
                    kwargs["extratags"] = [(285, "s", 0, names[index], True)]
                if names is not None and how == "description":
                    kwargs["description"] = names[index]
                tif.write(plane, photometric="minisblack", **kwargs)
        return path

    def c_axis(
        self,
        name: str,
        planes: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        how: str = "ome",
        **write_kwargs,
    ) -> Path:
        """One series with a C axis: ``how`` is ``"ome"``, ``"imagej"`` or ``"plain"``."""
        path = self._path(name)
        data = np.stack(planes)
        if how == "ome":
            metadata: dict = {"axes": "CYX"}
            if names is not None:
                metadata["Channel"] = {"Name": list(names)}
            metadata.update(write_kwargs.pop("metadata", {}))
            tifffile.imwrite(path, data, ome=True, metadata=metadata, **write_kwargs)
        elif how == "imagej":
            metadata = {"axes": "CYX"}
            if names is not None:
                metadata["Labels"] = list(names)
            metadata.update(write_kwargs.pop("metadata", {}))
            tifffile.imwrite(path, data, imagej=True, metadata=metadata, **write_kwargs)
        else:
            tifffile.imwrite(path, data, photometric="minisblack", **write_kwargs)
        return path

    # ---- layout 4: multi-cell stacks
    def stack(self, name: str, data: np.ndarray, axes: str = "TCYX", **write_kwargs) -> Path:
        path = self._path(name)
        if axes == "plain":
            tifffile.imwrite(path, data, photometric="minisblack", **write_kwargs)
        else:
            tifffile.imwrite(path, data, ome=True, metadata={"axes": axes}, **write_kwargs)
        return path

    def raw(self, name: str, content: bytes) -> Path:
        path = self._path(name)
        path.write_bytes(content)
        return path


@pytest.fixture
def tiffs(tmp_path: Path) -> TiffFactory:
    """A :class:`TiffFactory` writing into this test's temporary folder."""
    return TiffFactory(tmp_path)


@pytest.fixture
def planes_factory():
    """:func:`make_planes`."""
    return make_planes


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread (faster on a small busy machine), then restore."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
