import pytest

from sctk.errors import SctkError
from sctk.security.uploads import MAX_NAME, check_size, sanitise_filename


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("data.csv", "data.csv"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\run 1.parquet", "run_1.parquet"),
        (".bashrc", "bashrc"),
        ("résumé (final).npz", "resume_final_.npz"),
        ("a;rm -rf /;b.json", "b.json"),
    ],
)
def test_sanitised_names_are_plain_base_names(given, expected):
    assert sanitise_filename(given) == expected


def test_long_names_keep_their_extension():
    name = sanitise_filename("x" * 500 + ".parquet")
    assert len(name) == MAX_NAME
    assert name.endswith(".parquet")


@pytest.mark.parametrize("given", ["", "..", "/", "???", "CON.txt", "nul"])
def test_unusable_names_are_refused_with_one_sentence(given):
    with pytest.raises(SctkError, match="file name"):
        sanitise_filename(given)


def test_size_limit():
    check_size(10, 10)
    with pytest.raises(SctkError, match="over the limit of 10 bytes"):
        check_size(11, 10)
