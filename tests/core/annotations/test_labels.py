"""Class aliases, labels.csv reading and atomic writing."""

from __future__ import annotations

import csv

import pytest

from napari_deparray_ctc.core.annotations.labels import (
    CLASS_ALIASES,
    LabelRecord,
    LabelsFileError,
    canonical_label,
    class_from_folder_name,
    read_labels_csv,
    write_labels_csv,
)

ALL_ALIASES = [
    (alias, canonical) for canonical, aliases in CLASS_ALIASES.items() for alias in aliases
]


@pytest.mark.parametrize(("alias", "canonical"), ALL_ALIASES)
def test_every_class_alias_in_any_case(alias: str, canonical: str) -> None:
    assert canonical_label(alias) == canonical
    assert canonical_label(alias.upper()) == canonical
    assert canonical_label(f" {alias.lower()} ") == canonical


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Tumour cells", "CTC"),
        ("CTCs", "CTC"),
        ("non_ctc", "WBC"),
        ("Non CTC", "WBC"),
        ("Leukocytes", "WBC"),
        ("white-blood-cells", "WBC"),
        ("cd45", "WBC"),
        ("", None),
        ("unknown", None),
        ("N/A", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_canonical_label_variants(value, expected) -> None:
    assert canonical_label(value) == expected


def test_non_ctc_is_not_mistaken_for_ctc() -> None:
    for name in ("non-CTC", "nonCTC", "not CTC", "NON_CTC"):
        assert canonical_label(name) == "WBC"


def test_unknown_class_names_raise_with_the_accepted_names() -> None:
    with pytest.raises(ValueError, match=r"unknown class 'platelet'.*CTC.*WBC"):
        canonical_label("platelet")


def test_class_folder_names() -> None:
    assert class_from_folder_name("CTC") == "CTC"
    assert class_from_folder_name("tumor") == "CTC"
    assert class_from_folder_name("Leukocyte") == "WBC"
    assert class_from_folder_name("non-CTC") == "WBC"
    assert class_from_folder_name("sample_07") is None
    # numeric folders are sample numbers, not classes
    assert class_from_folder_name("0") is None
    assert class_from_folder_name("1") is None


def test_read_labels_csv_with_sample_column(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "cell_id,label,sample\ncell0001,CTC,P07\ncell0002,leukocyte,P07\ncell0003,,P08\n"
    )
    records = read_labels_csv(path)
    assert list(records) == ["cell0001", "cell0002", "cell0003"]
    assert records["cell0001"] == LabelRecord("cell0001", "CTC", "P07")
    assert records["cell0002"].label == "WBC"
    assert records["cell0003"] == LabelRecord("cell0003", None, "P08")


def test_read_labels_csv_accepts_header_aliases_semicolons_and_bom(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffCell ID;Class;Patient;score\nc1;tumour;A;0.9\nc2;WBC;B;0.1\n")
    records = read_labels_csv(path)
    assert records["c1"] == LabelRecord("c1", "CTC", "A")
    assert records["c2"] == LabelRecord("c2", "WBC", "B")


def test_repeated_rows_with_the_same_class_are_merged(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("cell_id,label\nc1,CTC\nc1,tumor\n")
    assert read_labels_csv(path) == {"c1": LabelRecord("c1", "CTC", None)}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "empty"),
        ("cell,score\nc1,0.3\n", "'label'"),
        ("label,score\nCTC,0.3\n", "cell id"),
        ("cell_id,label\nc1,CTC\nc2,platelet\n", "line 3: unknown class 'platelet'"),
        ("cell_id,label\nc1,CTC\nc1,WBC\n", "line 3: cell 'c1' is listed twice"),
        ("cell_id,label\n,CTC\n", "line 2: empty cell id"),
        ("sample,cell_id,label\nS1\n", "line 2: expected 3 fields"),
    ],
)
def test_bad_labels_files_name_the_file_line_and_reason(tmp_path, content, fragment) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(LabelsFileError) as info:
        read_labels_csv(path)
    assert str(info.value) == f"{path}: {info.value.reason}"
    assert fragment in info.value.reason


def test_missing_labels_file(tmp_path) -> None:
    with pytest.raises(LabelsFileError, match="cannot read"):
        read_labels_csv(tmp_path / "labels.csv")


def test_write_then_read_round_trip_with_extra_columns(tmp_path) -> None:
    path = tmp_path / "annotations.csv"
    rows = [
        LabelRecord("c1", "CTC", "P1"),
        ("c2", "leukocyte", "P1"),
        {"cell_id": "c3", "label": None, "group": "P2", "p_ctc": 0.42},
    ]
    write_labels_csv(path, rows)
    with open(path, newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["cell_id", "label", "sample", "p_ctc"]
    assert table[1:] == [["c1", "CTC", "P1", ""], ["c2", "WBC", "P1", ""], ["c3", "", "P2", "0.42"]]
    records = read_labels_csv(path)
    assert records["c2"] == LabelRecord("c2", "WBC", "P1")
    assert records["c3"] == LabelRecord("c3", None, "P2")


def test_write_without_groups_has_no_sample_column(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    write_labels_csv(path, [("c1", "CTC"), ("c2", "WBC")])
    assert path.read_text().splitlines() == ["cell_id,label", "c1,CTC", "c2,WBC"]


def test_failed_write_leaves_the_previous_file_intact(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    write_labels_csv(path, [("c1", "CTC")])
    before = path.read_bytes()
    with pytest.raises(LabelsFileError, match="row 1: unknown class 'banana'"):
        write_labels_csv(path, [("c1", "WBC"), ("c2", "banana")])

    def exploding_rows():
        yield ("c1", "WBC")
        raise RuntimeError("crash while producing rows")

    with pytest.raises(RuntimeError):
        write_labels_csv(path, exploding_rows())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]  # no temp files left


def test_write_rejects_rows_without_cell_id(tmp_path) -> None:
    with pytest.raises(LabelsFileError, match="missing cell_id"):
        write_labels_csv(tmp_path / "labels.csv", [{"label": "CTC"}])
    assert not (tmp_path / "labels.csv").exists()
