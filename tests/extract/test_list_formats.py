"""``--format``: detection of the four list forms (headers, blank lines, odd spacing, CRLF),
each explicit format, a list in the wrong format, mmaction2 ids and rawframes, Kinetics
patterns and trim windows."""

from pathlib import Path

import pytest

from extract.errors import InputError, LabelIdOutOfRangeError, MalformedRowError
from extract.inputs import TRIM_COLUMNS, read_video_list

CLASSES = ["abseiling", "air drumming", "juggling"]
FILES = ("v/a.mp4", "v/b.mp4", "v/c.mp4")
# each list form, with what it must read: ids (paths without extension), labels, splits
MIT = "v/a.mp4,abseiling,juggling\nv/b.mp4,air drumming\nv/c.mp4,juggling\n"
MMACTION = "v/a.mp4 0 2\nv/b.mp4 1\nv/c.mp4 2\n"
KINETICS = ("label,youtube_id,time_start,time_end,split\n"
            "abseiling,aaaaaaaaaaa,0,10,train\nair drumming,bbbbbbbbbbb,5,15,train\njuggling,ccccccccccc,1,11,train\n")
KINETICS_FILES = ("train/abseiling/aaaaaaaaaaa_000000_000010.mp4",
                  "train/air_drumming/bbbbbbbbbbb_000005_000015.mp4",
                  "train/juggling/ccccccccccc_000001_000011.mp4")
EXPECTED = {
    "mit": (["v/a", "v/b", "v/c"], [["abseiling", "juggling"], ["air drumming"], ["juggling"]]),
    "mmaction": (["v/a", "v/b", "v/c"], [["abseiling", "juggling"], ["air drumming"], ["juggling"]]),
    "kinetics": ([p[: -len(".mp4")] for p in KINETICS_FILES], [["abseiling"], ["air drumming"], ["juggling"]]),
}


def _messy(text: str, kind: str) -> dict[str, str]:
    """The list as written by various tools: blank lines, odd spacing, CRLF, a BOM, comments."""
    rows = text.splitlines()
    if kind == "mmaction":
        spaced = ["  " + r.replace(" ", " \t  ") + "\t " for r in rows]
    else:
        spaced = [" , ".join(r.split(",")) + "  " for r in rows]
    return {
        "clean": text,
        "blank lines": "\n\n" + "\n\n\n".join(rows) + "\n   \n",
        "odd spacing": "\n".join(spaced) + "\n",
        "crlf": text.replace("\n", "\r\n"),
        "bom, comment, crlf, no final newline": "\ufeff# list\r\n" + "\r\n\r\n".join(spaced),
    }


VARIANTS = [(kind, name) for kind, text in (("mit", MIT), ("mmaction", MMACTION), ("kinetics", KINETICS))
            for name in _messy(text, kind)]
VARIANTS += [("mit", "path,labels header"), ("mit", "video,label header, crlf")]


def _files(root: Path, *paths: str) -> None:
    for p in paths:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(b"")


def _list(tmp_path: Path, kind: str, variant: str) -> Path:
    text = {"mit": MIT, "mmaction": MMACTION, "kinetics": KINETICS}[kind]
    headers = {"path,labels header": "path,labels\n" + MIT,
               "video,label header, crlf": ("Video,Label\n" + MIT).replace("\n", "\r\n")}
    body = headers[variant] if variant in headers else _messy(text, kind)[variant]
    path = tmp_path / f"{kind}_list.txt"
    path.write_bytes(body.encode("utf-8"))
    return path


@pytest.fixture
def root(tmp_path):
    _files(tmp_path, *FILES, *KINETICS_FILES)
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return tmp_path


@pytest.mark.parametrize("kind, variant", VARIANTS, ids=[f"{k}-{v}" for k, v in VARIANTS])
def test_auto_detects_each_list_form_and_the_explicit_format_reads_the_same(kind, variant, root, caplog):
    path = _list(root, kind, variant)
    caplog.set_level("INFO", logger="extract.inputs")
    auto = read_video_list(path)
    assert f"detected the {kind} list format" in caplog.text
    explicit = read_video_list(path, list_format=kind)
    ids, labels = EXPECTED[kind]
    for vl in (auto, explicit):
        assert vl.classes == CLASSES
        assert vl.videos["id"].tolist() == ids
        assert vl.videos["labels"].tolist() == labels
        assert vl.videos["path"].tolist() == [str(root / (i + ".mp4")) for i in ids]
        assert list(vl.videos.columns) == ["id", "path", "split", "labels"]  # no trim window
    assert auto.format == explicit.format == {"mit": "table" if "header" in variant else "multi_mit"}.get(kind, kind)


def test_a_folder_is_detected_and_folder_format_reads_it(root):
    auto, explicit = read_video_list(root / "v"), read_video_list(root / "v", list_format="folder")
    assert auto.format == explicit.format == "folder"
    assert auto.videos["id"].tolist() == explicit.videos["id"].tolist() == ["a", "b", "c"]


def test_mmaction_list_without_labels_and_split_from_the_file_name(root):
    path = root / "kinetics400_val_list_videos.txt"
    path.write_text("v/a.mp4\nv/b.mp4\n")
    vl = read_video_list(path, list_format="mmaction")
    assert vl.format == "mmaction" and vl.videos["labels"].tolist() == [[], []]
    assert set(vl.videos["split"]) == {"val"}


# ------------------------------------------------------------------ a list in the wrong format
WRONG = [  # (list, --format, line named, words)
    ("mit", "kinetics", 1, "not in the kinetics format"),
    ("mit", "mmaction", 1, "not in the mmaction format"),
    ("mmaction", "mit", 1, "not in the mit format"),
    ("mmaction", "kinetics", 1, "it looks like the mmaction format"),
    ("kinetics", "mit", 1, "it looks like the kinetics format"),
    ("kinetics", "mmaction", 1, "not in the mmaction format"),
]


@pytest.mark.parametrize("kind, fmt, line, words", WRONG, ids=[f"{k}-as-{f}" for k, f, _, _ in WRONG])
def test_a_list_in_another_format_is_one_error_naming_the_line(kind, fmt, line, words, root):
    path = _list(root, kind, "blank lines")  # the first row is on line 3
    with pytest.raises(MalformedRowError) as err:
        read_video_list(path, list_format=fmt)
    assert err.value.line == 3 and str(err.value).startswith(f"{path}:3: ") and words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, line, words", [
    ("v/a.mp4 0\nv/b.mp4,1\n", 2, "has commas"),
    ("v/a.mp4 0\n\nv/b.mp4 cat\n", 3, "not an integer id"),
    ("v/a.mp4,0\nv/b.mp4 1 2\n", 2, "separated by spaces (an mmaction list?)"),
], ids=["commas in mmaction", "a name in mmaction", "spaces in mit"])
def test_a_row_in_another_format_further_down_names_its_line(text, line, words, root):
    path = root / "list.txt"
    path.write_text(text)
    with pytest.raises(MalformedRowError) as err:
        read_video_list(path)
    assert err.value.line == line and words in str(err.value)


def test_folder_format_and_a_file_do_not_mix(root):
    with pytest.raises(InputError, match="--format folder needs a folder"):
        read_video_list(_list(root, "mit", "clean"), list_format="folder")
    with pytest.raises(InputError, match="is a folder"):
        read_video_list(root / "v", list_format="mmaction")
    with pytest.raises(InputError, match="unknown list format 'csv'"):
        read_video_list(root / "v", list_format="csv")


def test_mmaction_label_id_outside_the_class_list(root):
    path = root / "list.txt"
    path.write_text("v/a.mp4 0\nv/b.mp4 1 3\n")
    with pytest.raises(LabelIdOutOfRangeError) as err:
        read_video_list(path, list_format="mmaction")
    assert str(err.value) == (f"{path}:2: label id 3 outside 0..2 (3 classes); check the class list "
                              "matches this file")


def test_mmaction_rawframes_rows_are_refused_with_their_line(root):
    (root / "frames" / "a").mkdir(parents=True)
    path = root / "rawframes.txt"
    path.write_text("\n  frames/a 163 1\n")
    with pytest.raises(MalformedRowError) as err:
        read_video_list(path)
    assert err.value.line == 2 and "rawframes" in str(err.value) and "video files only" in str(err.value)
    named_like_a_video = root / "dir.txt"  # a folder named x.mp4 is frames too
    (root / "frames" / "b.mp4").mkdir()
    named_like_a_video.write_text("v/a.mp4 0\nframes/b.mp4 1\n")
    with pytest.raises(MalformedRowError, match="rawframes") as err:
        read_video_list(named_like_a_video)
    assert err.value.line == 2


# ------------------------------------------------------------------ Kinetics patterns and windows


def test_kinetics_pattern_names_the_trimmed_files(root):
    _files(root, "videos_train/air drumming/bbbbbbbbbbb_000005_000015.mp4",
           "videos_train/abseiling/aaaaaaaaaaa_000000_000010.mp4",
           "videos_train/juggling/ccccccccccc_000001_000011.mp4")
    path = _list(root, "kinetics", "crlf")
    pattern = "videos_{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"  # mmaction2's download.py
    vl = read_video_list(path, kinetics_pattern=pattern)
    assert vl.videos["id"].tolist()[1] == "videos_train/air drumming/bbbbbbbbbbb_000005_000015"
    assert list(vl.videos.columns) == ["id", "path", "split", "labels"]
    crawler = "{split}/{label_dir}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"
    with_dir = read_video_list(path, kinetics_pattern=crawler)
    assert with_dir.videos["id"].tolist() == EXPECTED["kinetics"][0]


def test_kinetics_pattern_without_times_gives_each_row_its_window(root):
    _files(root, "full/aaaaaaaaaaa.mkv", "full/bbbbbbbbbbb.mkv", "full/ccccccccccc.mkv")
    path = root / "k.csv"
    path.write_text(KINETICS.replace("1,11,train", "1.5,11.25,train"))
    vl = read_video_list(path, kinetics_pattern="full/{youtube_id}.mkv")
    assert vl.videos["id"].tolist() == ["full/aaaaaaaaaaa", "full/bbbbbbbbbbb", "full/ccccccccccc"]
    assert vl.videos[list(TRIM_COLUMNS)].to_numpy().tolist() == [[0, 10], [5, 15], [1.5, 11.25]]


@pytest.mark.parametrize("pattern, words", [
    ("{youtube_id}_{start}.mp4", "unknown field {start}"),
    ("{split}/{label}.mp4", "lacks {youtube_id}"),
    ("{youtube_id}_{time_start:06d.mp4", "--kinetics-pattern"),
    ("{youtube_id}_{label:d}.mp4", "--kinetics-pattern"),
    ("{youtube_id[99]}.mp4", "IndexError"),
])
def test_a_bad_kinetics_pattern_is_one_error(pattern, words, root):
    with pytest.raises(InputError) as err:
        read_video_list(_list(root, "kinetics", "clean"), kinetics_pattern=pattern, check_files=False)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_an_empty_window_names_its_line(root):
    path = root / "k.csv"
    path.write_text("youtube_id,time_start,time_end\naaaaaaaaaaa,0,10\nbbbbbbbbbbb,12,12\n")
    with pytest.raises(MalformedRowError) as err:
        read_video_list(path, kinetics_pattern="{youtube_id}.mp4", check_files=False)
    assert err.value.line == 3 and "empty or negative" in str(err.value)
    assert len(read_video_list(path, check_files=False)) == 2
