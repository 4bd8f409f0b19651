"""Channel aliases, file-name tokens, channel maps and colormaps."""

from __future__ import annotations

import pytest

from napari_deparray_ctc.core.channels import (
    CANONICAL_CHANNELS,
    CHANNEL_ALIASES,
    CHANNEL_COLORMAPS,
    KNOWN_CHANNELS,
    ChannelMap,
    ChannelMapError,
    as_channel_map,
    canonical_channel,
    channel_from_name,
    colormap_for,
    find_channel_map,
    is_non_channel_name,
    load_channel_map,
    order_channels,
    resolve_plane_names,
    split_channel_token,
    split_index_token,
    tokenize,
)
from napari_deparray_ctc.core.io.common import is_channel_file_name

ALL_ALIASES = [
    (alias, canonical) for canonical, aliases in CHANNEL_ALIASES.items() for alias in aliases
]


@pytest.mark.parametrize(("alias", "canonical"), ALL_ALIASES)
def test_every_alias_maps_to_its_channel_in_any_case(alias: str, canonical: str) -> None:
    assert canonical_channel(alias) == canonical
    assert canonical_channel(alias.upper()) == canonical
    assert canonical_channel(alias.lower()) == canonical
    assert canonical_channel(f"  {alias.title()} ") == canonical


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Bright_Field", "BF"),
        ("bright field", "BF"),
        ("BrightField", "BF"),
        ("Ch01 - BF", "BF"),  # one known token inside a longer name
        ("Hoechst", "DAPI"),
        ("cy5", "APC"),
        ("TRITC", "TRITC"),  # unknown names are kept
        ("CK-PE-Cy5", "CK-PE-Cy5"),  # two channel tokens: ambiguous, kept as given
        ("pericyte", "pericyte"),
    ],
)
def test_canonical_channel_on_longer_and_unknown_names(name: str, expected: str) -> None:
    assert canonical_channel(name) == expected


def test_the_issue_alias_table_is_complete() -> None:
    expected = {
        "BF": {"bright-field", "brightfield", "bf", "tl", "trans", "transmitted"},
        "DAPI": {"dapi", "hoechst", "dna", "nuclei"},
        "FITC": {"fitc"},
        "PE": {"pe"},
        "APC": {"apc", "cy5"},
    }
    for canonical, names in expected.items():
        assert {a.lower() for a in CHANNEL_ALIASES[canonical]} >= names
    assert CANONICAL_CHANNELS == ("BF", "DAPI", "FITC", "PE", "APC")


@pytest.mark.parametrize(
    ("stem", "channel", "rest"),
    [
        ("cell0012_BF", "BF", "cell0012"),
        ("cell0012-DAPI", "DAPI", "cell0012"),
        ("DAPI cell 12", "DAPI", "cell 12"),
        ("Cell0012_bright-field", "BF", "Cell0012"),
        ("sample3_cell7_PE_raw", "PE", "sample3_cell7_raw"),
        ("cell_12 (TL)", "BF", "cell_12"),
        ("cell12.Hoechst", "DAPI", "cell12"),
        ("cell12_cy5", "APC", "cell12"),
        ("PE_sample_cell1_BF", "BF", "PE_sample_cell1"),  # the last channel token wins
    ],
)
def test_split_channel_token_finds_the_channel_and_the_cell_key(
    stem: str, channel: str, rest: str
) -> None:
    assert split_channel_token(stem) == (channel, rest)


@pytest.mark.parametrize(
    "stem",
    [
        "pericyte_12",  # "pe" inside a word
        "PEG_coated_12",
        "title_page",  # "tl" inside a word
        "transfected_cell",  # "trans" inside a word
        "DNAse_treated",
        "capecitabine_7",
        "cell0012",
    ],
)
def test_channel_tokens_do_not_match_inside_words(stem: str) -> None:
    assert split_channel_token(stem) == (None, stem)
    assert not is_channel_file_name(stem + ".tif")


def test_files_of_one_cell_share_the_cell_key() -> None:
    keys = {
        "_".join(tokenize(split_channel_token(stem)[1]))
        for stem in ("cell 12_BF", "cell 12_DAPI", "DAPI cell 12", "BF-cell 12")
    }
    assert keys == {"cell_12"}


def test_channel_map_tokens_are_recognised_in_file_names() -> None:
    cmap = as_channel_map({"Ch3": "BF", "Ch4": "DNA"})
    assert split_channel_token("Ch3_CP0008", cmap) == ("BF", "CP0008")
    assert split_channel_token("Ch4_CP0008", cmap) == ("DAPI", "CP0008")  # alias resolved
    assert split_channel_token("Ch3_CP0008") == (None, "Ch3_CP0008")


def test_colormaps_follow_the_issue() -> None:
    assert CHANNEL_COLORMAPS == {
        "BF": "gray",
        "DAPI": "blue",
        "FITC": "green",
        "PE": "yellow",
        "APC": "magenta",
        "Cy3": "red",
    }
    assert colormap_for("TRITC") == "gray"


def test_order_channels_uses_map_then_canonical_then_first_seen() -> None:
    assert order_channels(["APC", "X", "BF", "DAPI", "W"]) == ["BF", "DAPI", "APC", "X", "W"]
    cmap = ChannelMap(order=("DAPI", "X"))
    assert order_channels(["APC", "X", "BF", "DAPI"], cmap) == ["DAPI", "X", "BF", "APC"]


def test_resolve_plane_names_defaults_metadata_and_map_precedence() -> None:
    assert resolve_plane_names(None, 4) == ["BF", "DAPI", "C2", "C3"]
    assert resolve_plane_names(["Bright-field", None, "Cy5"], 3) == ["BF", "DAPI", "APC"]
    cmap = as_channel_map({0: "DAPI", 1: "BF"})
    # an index entry of the map wins over the name stored in the file
    assert resolve_plane_names(["BF", "DAPI"], 2, cmap) == ["DAPI", "BF"]
    token_map = as_channel_map({"ch00": "BF"})
    assert resolve_plane_names(["Ch00", "Ch01"], 2, token_map) == ["BF", "Ch01"]


def test_resolve_plane_names_keeps_duplicate_planes_under_new_names() -> None:
    assert resolve_plane_names(["BF", "bright field", "DAPI"], 3) == ["BF", "BF_1", "DAPI"]


def test_channels_txt_lists_names_in_page_order(tmp_path) -> None:
    path = tmp_path / "channels.txt"
    path.write_text("# four pages\nBF\n\nHoechst\nPE\nAPC\n")
    cmap = load_channel_map(path)
    assert cmap.by_index == {0: "BF", 1: "DAPI", 2: "PE", 3: "APC"}
    assert cmap.order == ("BF", "DAPI", "PE", "APC")
    assert cmap.source == str(path)


def test_channels_csv_with_header_index_and_token_rows(tmp_path) -> None:
    path = tmp_path / "channels.csv"
    path.write_text("channel,name\nCh3,BF\nCh4,DNA\n2,darkfield\n", encoding="utf-8-sig")
    cmap = load_channel_map(path)
    assert cmap.by_token == {("ch3",): "BF", ("ch4",): "DAPI"}
    assert cmap.by_index == {2: "darkfield"}
    assert cmap.order == ("BF", "DAPI", "darkfield")
    assert cmap.lookup_name("CH3") == "BF"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("a,b,c\n", "line 1"),
        ("BF\n,\n", "line 2"),
    ],
)
def test_bad_channel_maps_name_the_file_and_line(tmp_path, content: str, fragment: str) -> None:
    path = tmp_path / "channels.csv"
    path.write_text(content)
    with pytest.raises(ChannelMapError) as info:
        load_channel_map(path)
    assert str(info.value).startswith(f"{path}: ")
    assert fragment in info.value.reason


def test_missing_channel_map_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ChannelMapError, match="cannot read"):
        load_channel_map(tmp_path / "nope.csv")


def test_find_channel_map_prefers_csv(tmp_path) -> None:
    assert find_channel_map(tmp_path) is None
    (tmp_path / "channels.txt").write_text("BF\n")
    assert find_channel_map(tmp_path) == str(tmp_path / "channels.txt")
    (tmp_path / "channels.csv").write_text("0,BF\n")
    assert find_channel_map(tmp_path) == str(tmp_path / "channels.csv")


def test_as_channel_map_accepts_lists_dicts_paths_and_none(tmp_path) -> None:
    assert as_channel_map(None) is None
    listed = as_channel_map(["brightfield", "DAPI"])
    assert listed.by_index == {0: "BF", 1: "DAPI"}
    existing = ChannelMap(order=("BF",))
    assert as_channel_map(existing) is existing
    path = tmp_path / "channels.txt"
    path.write_text("BF\n")
    assert as_channel_map(path).by_index == {0: "BF"}
    with pytest.raises(TypeError):
        as_channel_map(3.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stem", "channel", "rest"),
    [
        ("pCellz10y522x392Ch0", "Ch0", "pCellz10y522x392"),  # cellfinder: after a digit
        ("Ch3_CP0001", "Ch3", "CP0001"),  # ImageStream
        ("leica_stack_Series014_z000_ch00", "ch00", "leica_stack_Series014_z000"),  # Leica LAS
        ("AICS_12_134_C=0", "C=0", "AICS_12_134"),  # Bio-Formats / Fiji
        ("Channel_0", "Channel_0", ""),
        ("channel 2 cell5", "channel 2", "cell5"),
        ("C2-blobs", "C2", "blobs"),  # Fiji "Split Channels"
        ("plate_w1", "w1", "plate"),  # MetaMorph
        ("plate_w2DAPI", "DAPI", "plate"),  # MetaMorph with the stain after the number
        ("AS_09125_050118150001_A01f00d2", "d2", "AS_09125_050118150001_A01f00"),  # Cellomics
    ],
)
def test_split_index_token_finds_instrument_channel_indices(
    stem: str, channel: str, rest: str
) -> None:
    assert split_index_token(stem) == (channel, rest)
    assert channel_from_name(stem) == (channel, rest)


@pytest.mark.parametrize(
    "stem", ["cell0012", "c1", "cell_d1", "batch12", "each3", "launch_7", "sandwich2", "sw1ft"]
)
def test_index_tokens_do_not_match_inside_words_or_cell_ids(stem: str) -> None:
    assert split_index_token(stem) == (None, stem)


def test_a_channel_map_names_index_tokens() -> None:
    cmap = as_channel_map({"Ch3": "BF", "C=1": "DAPI"})
    assert split_index_token("Ch3_CP0001", cmap) == ("BF", "CP0001")
    assert split_index_token("AICS_C=1", cmap) == ("DAPI", "AICS")


def test_stain_names_win_over_index_tokens() -> None:
    assert channel_from_name("img_000000000_Cy3_000") == ("Cy3", "img_000000000_000")
    assert channel_from_name("cell7_ch1_DAPI") == ("DAPI", "cell7_ch1")


def test_the_issue_16_names_are_recognised() -> None:
    assert canonical_channel("Cy3") == "Cy3"
    assert canonical_channel("transmission") == "BF"
    assert canonical_channel("brightfield") == "BF"
    assert canonical_channel("Phase contrast") == "Phase"  # not bright-field
    assert canonical_channel("DIC") == "DIC"
    assert {"Cy3", "DIC", "Phase"} <= set(KNOWN_CHANNELS)


@pytest.mark.parametrize(
    "name",
    ["Background", "Layer 1", "Untitled", "243", "1.5 µm", "c:1/2 z:30/64 t:1/68 - 4",
     "c:1/8; z:22/52 - 20170124_C07_004.czi #1", "Page 2"],
)  # fmt: skip
def test_page_titles_and_slice_labels_are_not_channel_names(name: str) -> None:
    assert is_non_channel_name(name)


@pytest.mark.parametrize("name", ["BF", "DAPI", "Ch1-T1", "Rhodamine", "CK-PE", "TRITC"])
def test_channel_names_are_channel_names(name: str) -> None:
    assert not is_non_channel_name(name)


def test_unnamed_planes_are_not_guessed_when_told_not_to() -> None:
    assert resolve_plane_names(None, 3, guess_unnamed=False) == ["C0", "C1", "C2"]
    assert resolve_plane_names(["Cy3", None], 2, guess_unnamed=False) == ["Cy3", "C1"]
