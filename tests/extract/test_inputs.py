"""read_video_list / read_class_list: every input format and every error, on tiny folders."""

from pathlib import Path

import numpy as np
import pytest

from extract.errors import (
    ClassListError,
    DuplicateVideoError,
    EmptyListError,
    InputError,
    LabelIdOutOfRangeError,
    MalformedRowError,
    MissingVideoError,
    SourceNotFoundError,
    UnknownLabelError,
)
from extract.inputs import UNSPLIT, read_class_list, read_video_list


def _touch(root: Path, *paths: str) -> None:
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_multi_mit_names_infers_sorted_classes(tmp_path):
    _touch(tmp_path, "v/a.mp4", "v/b.mp4", "v/c.mp4")
    csv = _write(tmp_path / "trainingSet.csv",
                 "v/a.mp4,running,jumping\n\n# a comment\nv/b.mp4,jumping\nv/c.mp4,swimming,\n")
    vl = read_video_list(csv)
    assert vl.format == "multi_mit"
    assert vl.classes == ["jumping", "running", "swimming"]
    assert list(vl.videos.columns) == ["id", "path", "split", "labels"]
    assert vl.videos["id"].tolist() == ["v/a", "v/b", "v/c"]
    assert vl.videos["path"].tolist() == [str(tmp_path / f"v/{n}.mp4") for n in "abc"]
    assert vl.videos["labels"].tolist() == [["running", "jumping"], ["jumping"], ["swimming"]]
    assert set(vl.videos["split"]) == {"train"}  # guessed from "trainingSet"
    np.testing.assert_array_equal(vl.label_matrix(), [[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert vl.labelled and len(vl) == 3


def test_multi_mit_integer_ids_use_the_class_file_beside_the_csv(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4")
    _write(tmp_path / "moments_categories.txt", "jumping,1\nrunning,0\nswimming,2\n")
    csv = _write(tmp_path / "validationSet.txt", "a.mp4,0,2\nb.mp4,1\n")
    vl = read_video_list(csv)
    assert vl.classes == ["running", "jumping", "swimming"]
    assert vl.videos["labels"].tolist() == [["running", "swimming"], ["jumping"]]
    assert set(vl.videos["split"]) == {"val"}


def test_names_and_ids_mix_with_an_explicit_class_list(tmp_path):
    _touch(tmp_path, "a.mp4")
    csv = _write(tmp_path / "list.csv", "a.mp4,1,cat\n")
    vl = read_video_list(csv, classes=["cat", "dog"], split="test")
    assert vl.videos["labels"].tolist() == [["dog", "cat"]]
    assert vl.videos["split"].tolist() == ["test"]


def test_mit_v1_vote_columns_are_ignored(tmp_path):
    _touch(tmp_path, "training/arresting/yt-x_42.mp4", "training/diving/yt-y_3.mp4")
    csv = _write(tmp_path / "trainingSet.csv",
                 "arresting/yt-x_42.mp4,arresting,3,0\ndiving/yt-y_3.mp4,diving,2,1\n")
    vl = read_video_list(csv, root=tmp_path / "training")
    assert vl.format == "mit"
    assert vl.classes == ["arresting", "diving"]
    assert vl.videos["labels"].tolist() == [["arresting"], ["diving"]]
    assert vl.videos["id"].tolist() == ["arresting/yt-x_42", "diving/yt-y_3"]


def test_kinetics_csv_finds_crawler_and_flat_layouts(tmp_path):
    _touch(tmp_path, "train/air_drumming/abcdefghijk_000010_000020.mp4",
           "val/bbbbbbbbbbb_000001_000011.mp4", "train/abseiling/ccccccccccc_000000_000010.mp4")
    csv = _write(tmp_path / "kinetics.csv",
                 "label,youtube_id,time_start,time_end,split,is_cc\n"
                 "air drumming,abcdefghijk,10,20,train,0\n"
                 "abseiling,bbbbbbbbbbb,1,11,validate,0\n"
                 "abseiling,ccccccccccc,0.0,10.0,train,1\n")
    vl = read_video_list(csv)
    assert vl.format == "kinetics"
    assert vl.classes == ["abseiling", "air drumming"]
    assert vl.videos["id"].tolist() == ["train/air_drumming/abcdefghijk_000010_000020",
                                        "val/bbbbbbbbbbb_000001_000011",
                                        "train/abseiling/ccccccccccc_000000_000010"]
    assert vl.videos["split"].tolist() == ["train", "val", "train"]
    assert vl.videos["labels"].tolist() == [["air drumming"], ["abseiling"], ["abseiling"]]


def test_kinetics_test_csv_without_labels(tmp_path):
    _touch(tmp_path, "test/ddddddddddd_000005_000015.mp4")
    csv = _write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\n"
                                        "ddddddddddd,5,15,test\n")
    vl = read_video_list(csv)
    assert vl.videos["labels"].tolist() == [[]] and not vl.labelled and vl.classes == []


def test_table_csv_with_labels_and_split_columns(tmp_path):
    _touch(tmp_path, "x/1.mp4", "x/2.webm")
    csv = _write(tmp_path / "videos.csv", "path,labels,split,extra\n"
                                          "x/1.mp4,cat;dog,train,ignored\n"
                                          'x/2.webm,,"val",\n')
    vl = read_video_list(csv)
    assert vl.format == "table"
    assert vl.videos["labels"].tolist() == [["cat", "dog"], []]
    assert vl.videos["split"].tolist() == ["train", "val"]
    assert vl.videos["id"].tolist() == ["x/1", "x/2"]


def test_folder_is_scanned_recursively_and_unlabelled(tmp_path):
    _touch(tmp_path, "b/clip.MP4", "a/one.avi", "a/.hidden.mp4", ".cache/x.mp4", "notes.txt",
           "a/deeper/two.mkv")
    vl = read_video_list(tmp_path, classes=["cat"])
    assert vl.format == "folder"
    assert vl.videos["id"].tolist() == ["a/deeper/two", "a/one", "b/clip"]
    assert set(vl.videos["split"]) == {UNSPLIT}
    assert vl.classes == ["cat"] and not vl.labelled
    assert vl.label_matrix().shape == (3, 1)
    assert set(read_video_list(tmp_path, split="validation").videos["split"]) == {"val"}


def test_absolute_paths_and_a_separate_root(tmp_path):
    _touch(tmp_path, "data/a.mp4", "elsewhere/b.mp4")
    csv = _write(tmp_path / "lists" / "l.csv",
                 f"a.mp4,x\n{tmp_path / 'elsewhere' / 'b.mp4'},y\n")
    vl = read_video_list(csv, root=tmp_path / "data")
    assert vl.videos["path"].tolist() == [str(tmp_path / "data/a.mp4"),
                                          str(tmp_path / "elsewhere/b.mp4")]
    assert vl.videos["id"].tolist()[0] == "a"
    assert vl.videos["id"].tolist()[1].endswith("elsewhere/b")


def test_bom_and_crlf_line_endings(tmp_path):
    _touch(tmp_path, "a.mp4")
    csv = tmp_path / "l.csv"
    csv.write_bytes("\ufeffa.mp4,x\r\n".encode("utf-8"))
    assert read_video_list(csv).videos["labels"].tolist() == [["x"]]


def test_class_list_formats(tmp_path):
    assert read_class_list(_write(tmp_path / "c.txt", "b\n\na\n")) == ["b", "a"]
    indexed = _write(tmp_path / "m.txt", "zz,2\nyy,0\nxx,1\n")
    assert read_class_list(indexed) == ["yy", "xx", "zz"]


# ---------------------------------------------------------------- errors


def _error(exc_type, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        read_video_list(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message  # one line
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    return message


def test_unknown_label_names_file_and_line(tmp_path):
    _touch(tmp_path, "a.mp4", "b.mp4")
    csv = _write(tmp_path / "l.csv", "a.mp4,cat\nb.mp4,cow\n")
    msg = _error(UnknownLabelError, csv, classes=["cat", "dog"])
    assert msg.startswith(f"{csv}:2: unknown label 'cow'") and "cat, dog" in msg


def test_label_id_out_of_range(tmp_path):
    _touch(tmp_path, "a.mp4")
    csv = _write(tmp_path / "l.csv", "\na.mp4,0,7\n")
    msg = _error(LabelIdOutOfRangeError, csv, classes=["cat", "dog"])
    assert msg.startswith(f"{csv}:2: label id 7 outside 0..1")


def test_label_ids_without_a_class_list(tmp_path):
    _touch(tmp_path, "a.mp4")
    csv = _write(tmp_path / "l.csv", "a.mp4,3\n")
    assert "no class list" in _error(LabelIdOutOfRangeError, csv)


def test_missing_files_are_counted_and_the_first_listed(tmp_path):
    _touch(tmp_path, "ok.mp4")
    rows = "ok.mp4,x\n" + "".join(f"gone{i}.mp4,x\n" for i in range(7))
    csv = _write(tmp_path / "l.csv", rows)
    msg = _error(MissingVideoError, csv)
    assert msg.startswith(f"{csv}:2: 7 of 8 listed videos not found")
    assert "line 2: " in msg and "gone4.mp4" in msg and "gone5.mp4" not in msg
    assert "check the root folder" in msg
    assert len(read_video_list(csv, check_files=False)) == 8


def test_empty_inputs(tmp_path):
    blank = _write(tmp_path / "blank.csv", "\n# nothing here\n\n")
    assert "lists no videos" in _error(EmptyListError, blank)
    header_only = _write(tmp_path / "h.csv", "path,labels,split\n")
    assert "header but lists no videos" in _error(EmptyListError, header_only)
    (tmp_path / "empty").mkdir()
    _touch(tmp_path, "empty/readme.txt")
    assert "no video files" in _error(EmptyListError, tmp_path / "empty")


def test_malformed_rows(tmp_path):
    _touch(tmp_path, "a.mp4")
    table = _write(tmp_path / "t.csv", "path,labels,split\na.mp4,x,train\na.mp4,x\n")
    assert _error(MalformedRowError, table).startswith(f"{table}:3: expected 3 fields")
    kinetics = _write(tmp_path / "k.csv", "label,youtube_id,time_start,time_end,split\n"
                                          "x,abc,ten,20,train\n")
    assert "must be numbers" in _error(MalformedRowError, kinetics)
    no_path = _write(tmp_path / "n.csv", "a.mp4,x\n,y\n")
    assert _error(MalformedRowError, no_path).startswith(f"{no_path}:2: empty path")


def test_duplicate_path_and_duplicate_id(tmp_path):
    _touch(tmp_path, "a.mp4", "a.avi")
    dup = _write(tmp_path / "d.csv", "a.mp4,x\nb/../a.mp4,y\n")
    msg = _error(DuplicateVideoError, dup)
    assert msg.startswith(f"{dup}:2: video path") and "line 1" in msg
    dup_id = _write(tmp_path / "i.csv", "a.mp4,x\na.avi,y\n")
    assert "video id 'a' already listed on line 1" in _error(DuplicateVideoError, dup_id)


def test_source_and_class_list_errors(tmp_path):
    assert "no such file or folder" in _error(SourceNotFoundError, tmp_path / "nope.csv")
    _touch(tmp_path, "a.mp4")
    csv = _write(tmp_path / "l.csv", "a.mp4,x\n")
    twice = _write(tmp_path / "twice.txt", "x\ny\nx\n")
    assert _error(ClassListError, csv, classes=twice).startswith(f"{twice}:3: class 'x'")
    gap = _write(tmp_path / "gap.txt", "x,0\ny,2\n")
    assert "no gaps" in _error(ClassListError, csv, classes=gap)
    assert "repeated" in _error(ClassListError, csv, classes=["x", "x"])
    assert "class list not found" in _error(SourceNotFoundError, csv,
                                            classes=tmp_path / "missing.txt")


CLEAN = "v/a.mp4,running,jumping\nv/b.mp4,jumping\nv/c.mp4,swimming\n"
VARIANTS = {
    "header path,label": "path,label\n" + CLEAN,
    "header path,labels": "path,labels\n" + CLEAN,
    "header video,label": "video,label\n" + CLEAN,
    "blank lines": "\n" + CLEAN.replace("\n", "\n\n\n") + "   \n",
    "trailing spaces": "v/a.mp4 , running ,jumping   \nv/b.mp4,jumping \t\n  v/c.mp4,swimming  \n",
    "trailing commas": CLEAN.replace("\n", ",\n"),
    "windows line endings": CLEAN.replace("\n", "\r\n"),
    "old mac line endings": CLEAN.replace("\n", "\r"),
    "no final newline": CLEAN.rstrip("\n"),
    "utf-8 bom": "\ufeff" + CLEAN,
    "everything at once": "\ufeffpath,label \r\n\r\n" + CLEAN.replace("\n", " ,\r\n\r\n"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_messy_list_reads_the_same_as_a_clean_one(variant, tmp_path):
    _touch(tmp_path, "v/a.mp4", "v/b.mp4", "v/c.mp4")
    clean = read_video_list(_write(tmp_path / "clean.csv", CLEAN))
    messy = tmp_path / "messy.csv"
    messy.write_bytes(VARIANTS[variant].encode("utf-8"))
    got = read_video_list(messy)
    assert got.classes == clean.classes == ["jumping", "running", "swimming"]
    for column in ("id", "path", "split", "labels"):
        assert got.videos[column].tolist() == clean.videos[column].tolist(), column


@pytest.mark.parametrize("text, line, words", [
    ("v/a.mp4,running\nv/b.mp4,caf\xe9\n", 2, "not UTF-8"),
    ("path,labels,split\nv/a.mp4,running,train\n\nv/b.mp4,running,train,extra\n", 4, "expected 3 fields"),
    ("\ufeffv/a.mp4,running\r\n\r\n,running\r\n", 3, "empty path"),
], ids=["latin-1", "extra field", "empty path"])
def test_a_bad_line_is_named_with_its_number(text, line, words, tmp_path):
    _touch(tmp_path, "v/a.mp4", "v/b.mp4")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(text.encode("latin-1" if "\xe9" in text else "utf-8"))
    with pytest.raises(MalformedRowError) as err:
        read_video_list(bad)
    assert err.value.line == line and err.value.path == bad
    assert str(err.value).startswith(f"{bad}:{line}: ") and words in str(err.value)
