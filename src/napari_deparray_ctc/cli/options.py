"""Options shared by several commands; training defaults are read from TrainConfig only."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from napari_deparray_ctc.core.constants import ARCHITECTURES, DAPI_STRATEGIES

__all__ = [
    "HelpWithTrainDefaults",
    "add_cell_counts",
    "add_channel_map_option",
    "add_data_argument",
    "add_inference_options",
    "add_pixel_size_option",
    "add_train_options",
    "check_pixel_size",
    "make_config",
    "train_overrides",
]


def on_off(text: str) -> bool:
    """``on``/``off`` (also yes/no, true/false, 1/0) as a bool, for switch options."""
    value = text.strip().lower()
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"say on or off, not {text!r}")


#: (CLI option, TrainConfig field, type, choices, help) of the training options shared by
#: ``train``, ``evaluate --cv`` and ``demo``. Defaults come from TrainConfig, never from here.
TRAIN_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], tuple[str, ...] | None, str], ...] = (
    ("--arch", "arch", str, ARCHITECTURES, "network architecture"),
    ("--epochs", "epochs", int, None, "maximum number of epochs"),
    ("--size", "image_size", int, None, "network input size in pixels (cells are resized)"),
    ("--batch-size", "batch_size", int, None, "training batch size"),
    ("--lr", "lr", float, None, "peak learning rate"),
    (
        "--augment",
        "augment",
        str,
        None,
        "augmentation families: a comma-separated subset of geometric,photometric,noise, "
        "or 'all', or 'none'",
    ),
    (
        "--dapi-strategy",
        "dapi_strategy",
        str,
        DAPI_STRATEGIES,
        "how DAPI images enter training (inference is always BF only)",
    ),
    ("--val-fraction", "val_fraction", float, None, "fraction of cells held out for validation"),
    ("--seed", "seed", int, None, "random seed (CPU runs are deterministic)"),
    ("--patience", "patience", int, None, "early stopping: epochs without improvement"),
    ("--device", "device", str, None, "cuda, mps or cpu"),
    ("--threads", "num_threads", int, None, "torch CPU threads"),
    (
        "--pretrained",
        "pretrained",
        str,
        None,
        "starting weights: synthetic (shipped), imagenet (downloaded into the torch cache on "
        "first use), auto (ImageNet weights already in the cache) or a weights file",
    ),
    (
        "--train-layers",
        "train_layers",
        str,
        ("all", "head"),
        "which layers training changes: all, or head (only the last layer of a network "
        "started from --init-from or --pretrained)",
    ),
    (
        "--flat-field",
        "flat_field",
        on_off,
        None,
        "on: divide out the illumination plane fitted to each crop's border before the "
        "intensity scaling (training and classification alike); off: the crop as it is",
    ),
    (
        "--randconv",
        "random_convolution",
        on_off,
        None,
        "on (the default): show half of the training cells through a random linear filter "
        "(RandConv), a lever against other instruments' optics; classification is "
        "unchanged. off: the augmentation families alone",
    ),
    (
        "--style-noise",
        "style_noise",
        on_off,
        None,
        "on: while training, re-draw the per-cell means and spreads of the network's early "
        "feature maps (DSU), a lever against other instruments' contrast and texture; "
        "classification is unchanged. off: plain training",
    ),
    (
        "--morphology",
        "morphology",
        on_off,
        None,
        "on: combine the network's score with explicit cell-shape features (size, elongation, "
        "outline, contrast, rim, texture) in a regression fitted on the out-of-fold scores; "
        "off: the network alone",
    ),
)


def _format_default(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(value) if value else "none"
    return "automatic" if value is None else str(value)


def _train_defaults() -> dict[str, Any]:
    from napari_deparray_ctc.core.training.train import config_field_defaults

    return dict(config_field_defaults())


def _field_help() -> dict[str, str]:
    """Per-field help text stored beside TrainConfig's defaults (when there is any)."""
    from napari_deparray_ctc.core.training.train import TrainConfig

    return {
        f.name: str(f.metadata["help"])
        for f in dataclasses.fields(TrainConfig)
        if "help" in f.metadata
    }


class HelpWithTrainDefaults(argparse.Action):
    """``-h`` for commands with training options: fills in the TrainConfig defaults first.

    Reading TrainConfig imports the training code, so this happens only when that help is
    asked for (``deparray-ctc --help`` stays cheap).
    """

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            defaults, helps = _train_defaults(), _field_help()
        except Exception:  # help must still work when torch is broken
            defaults, helps = {}, {}
        defaults.update(getattr(parser, "train_default_overrides", {}))
        for action in parser._actions:
            field = getattr(action, "train_field", None)
            if field is None or not action.help:
                continue
            if field in helps and not getattr(action, "help_filled", False):
                action.help = helps[field]
                action.help_filled = True  # type: ignore[attr-defined]
            if field in defaults and "(default:" not in action.help:
                action.help += f" (default: {_format_default(defaults[field])})"
        parser.print_help()
        parser.exit()


def add_data_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """The positional DATA argument (one or more exports)."""
    parser.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help=f"{what}: DEPArray export folders or TIFF files (any layout the reader accepts; "
        "labels from class folders CTC/ and WBC/ or a labels.csv)",
    )


def add_channel_map_option(parser: argparse.ArgumentParser) -> None:
    """``--channel-map FILE``."""
    parser.add_argument(
        "--channel-map",
        default=None,
        metavar="FILE",
        help="channel map file (channels.csv/.txt) (default: the one beside the files, if any)",
    )


def add_inference_options(
    parser: argparse.ArgumentParser,
    batch_size: int = 64,
    batch_help: str = "cells per forward pass",
) -> None:
    """``--batch-size``, ``--device`` and ``--threads`` of the commands that run a model."""
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"{batch_help} (default: {batch_size})"
    )
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: automatic)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )


def add_pixel_size_option(parser: argparse.ArgumentParser) -> None:
    """``--pixel-size UM``: DATA's pixel size, for every cell."""
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        metavar="UM",
        help="pixel size of DATA in micrometres, for every cell (default: what each file "
        "declares; cells are rescaled to the model's training pixel size when both are known)",
    )


def check_pixel_size(pixel_size: float | None) -> None:
    """Refuse a ``--pixel-size`` that is not a positive number of micrometres."""
    from napari_deparray_ctc.cli.data import CliError

    if pixel_size is not None and not 0 < pixel_size < 1000:
        raise CliError(f"--pixel-size must be a positive size in micrometres, not {pixel_size}")


def add_cell_counts(parser: argparse.ArgumentParser, cells: int, cells_help: str) -> None:
    """``--cells N`` and ``--ctc-fraction F`` of the commands that synthesise cells."""
    parser.add_argument("--cells", type=int, default=cells, help=f"{cells_help} (default: {cells})")
    parser.add_argument(
        "--ctc-fraction", type=float, default=0.2, help="fraction of CTCs (default: 0.2)"
    )


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The training options, all defaulting to TrainConfig's values."""
    group = parser.add_argument_group("training options (defaults: TrainConfig)")
    for option, field, type_, choices, help_text in TRAIN_OPTIONS:
        action = group.add_argument(
            option,
            dest=field,
            type=type_,
            choices=choices,
            default=None,
            metavar=field.upper() if choices is None else None,
            help=help_text,
        )
        action.train_field = field  # type: ignore[attr-defined]


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Training options the user gave (those left out keep TrainConfig's defaults)."""
    from napari_deparray_ctc.cli.data import CliError

    values = {
        field: getattr(args, field)
        for _, field, _, _, _ in TRAIN_OPTIONS
        if getattr(args, field, None) is not None
    }
    if "augment" in values:
        from napari_deparray_ctc.core.training.augment import check_families

        try:
            values["augment"] = check_families(values["augment"])
        except ValueError as exc:
            raise CliError(f"--augment: {' '.join(str(exc).split())}") from None
    return values


def make_config(overrides: dict[str, Any], **extra: Any):
    """A validated TrainConfig from the user's options (one-line error when invalid)."""
    from napari_deparray_ctc.cli.data import CliError, check_device
    from napari_deparray_ctc.core.training.train import TrainConfig

    values = {**overrides, **extra}
    check_device(values.get("device"))
    try:
        return TrainConfig(**values).validated()
    except (TypeError, ValueError) as exc:
        raise CliError(f"invalid training option: {' '.join(str(exc).split())}") from None


def apply_threads(num_threads: int | None) -> None:
    """Set torch's CPU threads for the whole command."""
    if num_threads:
        import torch

        torch.set_num_threads(int(num_threads))
