"""``deparray-ctc demo --gui``: the main job in napari, on synthetic cells.

Writes a labelled synthetic DEPArray export into a new folder, opens napari with it loaded
(one ``(N, Y, X)`` stack per channel), and docks the "Train classifier" and "Classify cells"
widgets, ready for: Train -> Use this model -> Run -> review and correct with c / w / u ->
retrain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_CELLS", "DemoSession", "launch_demo_gui", "setup_demo"]

#: cells in the demo export (about 30 % CTC, two samples so the split is by sample)
DEMO_CELLS = 120
DEMO_CTC_FRACTION = 0.3
DEMO_SAMPLES = 2
PLUGIN = "napari-deparray-ctc"


@dataclass
class DemoSession:
    """What :func:`setup_demo` put in the viewer.

    Attributes
    ----------
    folder
        The demo folder (export, model and annotations go here).
    export
        The synthetic export folder.
    layers
        The layers opened from it.
    train_widget, classify_widget
        The docked widgets.
    """

    folder: Path
    export: Path
    layers: list[Any]
    train_widget: Any
    classify_widget: Any


def setup_demo(
    viewer: Any,
    folder: str | os.PathLike | None = None,
    n_cells: int = DEMO_CELLS,
    seed: int = 0,
    image_size: int = 64,
) -> DemoSession:
    """Write the synthetic export and set up ``viewer`` with it and both widgets.

    Parameters
    ----------
    viewer
        A napari viewer.
    folder
        New or empty folder for the demo (default: a new folder in the user cache).
    n_cells, seed, image_size
        Size and seed of the synthetic export.

    Returns
    -------
    DemoSession
    """
    from napari_deparray_ctc.core.demo import new_demo_folder, write_demo_export

    demo = new_demo_folder(folder, kind="demo-gui")
    export = write_demo_export(
        demo / "export", n_cells, DEMO_CTC_FRACTION, seed, DEMO_SAMPLES, image_size=image_size
    )
    layers = viewer.open(str(export), plugin=PLUGIN)
    _dock, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify cells")
    _dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train classifier")
    viewer.window.add_plugin_dock_widget(PLUGIN, "Cell gallery")
    train.settings.out_edit.setText(str(demo / "model.pt"))
    bf = next(
        (layer for layer in layers if layer.metadata.get("deparray", {}).get("channel") == "BF"),
        None,
    )
    if bf is not None:
        viewer.layers.selection.active = bf
    viewer.status = (
        f"Demo: {n_cells} synthetic cells in {export}. Press Train, then 'Use this model' and "
        "Run; correct calls with c / w / u and train again."
    )
    return DemoSession(demo, Path(export), list(layers), train, classify)


def launch_demo_gui(
    folder: str | os.PathLike | None = None,
    n_cells: int = DEMO_CELLS,
    seed: int = 0,
) -> int:
    """Open napari with the synthetic demo export and both widgets docked; block until closed.

    Parameters
    ----------
    folder, n_cells, seed
        See :func:`setup_demo`.

    Returns
    -------
    int
        ``0`` once the napari window is closed (the command's exit status).
    """
    import napari

    viewer = napari.Viewer(title="DEPArray CTC demo")
    session = setup_demo(viewer, folder, n_cells=n_cells, seed=seed)
    print(f"napari demo: export in {session.export}; the model will be saved in {session.folder}")
    napari.run()
    return 0
