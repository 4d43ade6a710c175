"""QIDO-RS on person names in other character sets, from the shared sample files.

The files are the PS3.5 annex H, I and J examples that pydicom ships. The archive
decodes their names when it stores them, so they are matched as Unicode, whatever the
instance's character set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from tests.qido.helpers import search
from tests.support import SHARED_DATA_DIR

pytestmark = pytest.mark.shared_data

CHARSET_DIR = SHARED_DATA_DIR / "charsets"
# One file per SOP Instance UID: chrJapMultiExplicitIR6 and chrFrenMulti repeat others.
CHARSET_FILES = [
    "chrH31.dcm",
    "chrH32.dcm",
    "chrI2.dcm",
    "chrKoreanMulti.dcm",
    "chrJapMulti.dcm",
    "chrX1.dcm",
    "chrX2.dcm",
    "chrGreek.dcm",
    "chrRuss.dcm",
    "chrFren.dcm",
]


@pytest.fixture
def charset_context(context: ArchiveContext, tmp_path: Path) -> ArchiveContext:
    if not CHARSET_DIR.is_dir():
        pytest.skip(f"the shared character set samples are not in {CHARSET_DIR}")
    for name in CHARSET_FILES:
        spool = context.archive.new_spool_path()
        spool.write_bytes((CHARSET_DIR / name).read_bytes())
        context.archive.store_part10(spool)
    return context


def _names(client: TestClient, name: str, fuzzy: bool = False) -> set[str]:
    params = {"PatientName": name, "fuzzymatching": "true" if fuzzy else "false"}
    results = search(client, "/studies", params)
    return {result["00100010"]["Value"][0].get("Alphabetic", "") for result in results}


def test_japanese_name_matches_each_group(
    client: TestClient, charset_context: ArchiveContext
) -> None:
    assert _names(client, "山田^太郎") == {"Yamada^Tarou", "ﾔﾏﾀﾞ^ﾀﾛｳ"}
    assert _names(client, "Yamada^Tarou") == {"Yamada^Tarou"}
    assert _names(client, "やまだ^*") == {"Yamada^Tarou", "ﾔﾏﾀﾞ^ﾀﾛｳ", "やまだ^たろう"}
    assert _names(client, "ﾔﾏ", fuzzy=True) == {"ﾔﾏﾀﾞ^ﾀﾛｳ"}


def test_korean_and_chinese_names_match(
    client: TestClient, charset_context: ArchiveContext
) -> None:
    assert _names(client, "홍^길동") == {"Hong^Gildong"}
    assert _names(client, "김희중") == {"김희중"}
    assert _names(client, "王^*") == {"Wang^XiaoDong"}
    assert _names(client, "?^小?") == {"Wang^XiaoDong"}


def test_other_scripts_match_ignoring_case(
    client: TestClient, charset_context: ArchiveContext
) -> None:
    assert _names(client, "ΔΙΟΝΥΣΙΟΣ") == {"Διονυσιος"}
    assert _names(client, "ЛЮК*") == {"Люкceмбypг"}
    assert _names(client, "buc^jérôme") == {"Buc^Jérôme"}


def test_name_groups_return_as_json_parts(
    client: TestClient, charset_context: ArchiveContext
) -> None:
    [result] = search(client, "/studies", {"PatientName": "Hong^Gildong"})

    assert result["00100010"]["Value"] == [
        {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}
    ]
