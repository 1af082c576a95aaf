"""Strip metadata files beside the DEMs (PGC's ``_mdf.txt`` and ``_meta.txt``) give the
acquisition times, sensors and image ids; the file name is the fallback, and every
disagreement between the two is reported."""

from __future__ import annotations

import datetime as dt
import logging

from pipeline.orchestration.run import inputs_digest
from pipeline.config import Config
from pipeline.strips.index import load_strips
from pipeline.strips.meta import parse_mdf, read_strip_metadata

NAME = "SETSM_s2s041_WV01_20160608_1020010053BC3A00_1020010050BE1800_2m_lsf_seg1"
OTHER = "SETSM_s2s041_WV02_20170712_10300100AAAAAA00_10300100BBBBBB00_2m_lsf_seg1"
V3 = "SETSM_WV03_20180801_104001003CCCCC00_104001003DDDDD00_seg1_2m_v3.0"


def mdf(platform="WV01", date="2016-06-08", t1="2016-06-08 16:38:02", cat1="1020010053BC3A00") -> str:
    return f"""generationTime = 2021-11-07T00:00:00.000000Z;
numRows = 9000;
BEGIN_GROUP = STRIP_DEM
\tdemID = "{NAME}";
\tplatform1 = "{platform}";
\tplatform2 = "{platform}";
\tcatId1 = "{cat1}";
\tcatId2 = "1020010050BE1800";
\tacqDate1 = {date};
\tacqDate2 = {date};
\tavgAcqTime1 = "{t1}";
\tavgAcqTime2 = "2016-06-08 16:38:44";
\tBEGIN_GROUP = REGISTRATION
\t\tregistrationDZ = -0.12;
\tEND_GROUP = REGISTRATION
END_GROUP = STRIP_DEM
END
"""


META = """Strip Metadata (v3.0)
Creation Date: Fri Aug 10 10:00:00 2018
scene 1 name=WV03_20180801_104001003CCCCC00_104001003DDDDD00_R1C1-00000000_P001_2_meta.txt
Image 1=/mnt/pgc/data/WV03_20180801213245_104001003CCCCC00_18AUG01213245-P1BS-00000000_P001.tif
Image_1_satID=WV03
Image_1_Acquisition_time=2018-08-01T21:32:45.123456Z
Image 2=/mnt/pgc/data/WV03_20180801213330_104001003DDDDD00_18AUG01213330-P1BS-00000000_P001.tif
Image_2_satID=WV03
Image_2_Acquisition_time=2018-08-01T21:33:30.654321Z
"""


def _folder(tmp_path, files: dict[str, str]):
    for stem in (NAME, OTHER, V3):
        (tmp_path / f"{stem}_dem.tif").write_bytes(b"")  # discovery needs only the names
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_an_mdf_file_gives_acquisition_time_sensor_and_image_ids():
    d = parse_mdf(mdf())
    assert d["STRIP_DEM_catId1"] == "1020010053BC3A00" and d["STRIP_DEM_REGISTRATION_registrationDZ"] == "-0.12"


def test_metadata_files_set_the_time_and_agree_silently_with_the_name(tmp_path, caplog):
    _folder(tmp_path, {f"{NAME}_mdf.txt": mdf(), f"{V3}_meta.txt": META})
    with caplog.at_level(logging.WARNING):
        strips = {s.name: s for s in load_strips(tmp_path, warn=logging.getLogger("t").warning)}
    assert strips[NAME].meta.acquired == dt.datetime(2016, 6, 8, 16, 38, 2)
    assert strips[V3].meta.acquired == dt.datetime(2018, 8, 1, 21, 32, 45, 123456)
    assert strips[OTHER].meta.acquired is None and strips[OTHER].date == dt.date(2017, 7, 12)  # the name: fallback
    assert "disagree" not in caplog.text and "the metadata is used" not in caplog.text
    md = read_strip_metadata(tmp_path / f"{V3}_meta.txt")
    assert (md.catid1, md.catid2, md.sensor1) == ("104001003CCCCC00", "104001003DDDDD00", "WV03")


def test_a_conflict_between_name_and_metadata_is_reported_and_the_metadata_used(tmp_path, caplog):
    _folder(tmp_path, {f"{NAME}_mdf.txt": mdf(platform="WV02", date="2016-06-09", t1="2016-06-09 00:10:00",
                                              cat1="1020010053BC3A99")})
    with caplog.at_level(logging.WARNING):
        s = next(s for s in load_strips(tmp_path, warn=logging.getLogger("t").warning) if s.name == NAME)
    assert s.date == dt.date(2016, 6, 9) and s.meta.sensor == "WV02"
    text = caplog.text
    assert f"{NAME}_mdf.txt: acquisition date 2016-06-09 (the name says 2016-06-08)" in text
    assert "sensor WV02 (the name says WV01)" in text and "image ids" in text
    # a changed acquisition time changes what the cell depends on
    (tmp_path / f"{NAME}_mdf.txt").write_text(mdf(t1="2016-06-08 16:40:00"))
    moved = next(s for s in load_strips(tmp_path, warn=lambda m: None) if s.name == NAME)
    assert inputs_digest([moved], Config()) != inputs_digest([s], Config())


def test_an_unparsable_metadata_file_is_reported_and_the_name_used(tmp_path, caplog):
    _folder(tmp_path, {f"{NAME}_mdf.txt": "this is not a metadata file\n"})
    with caplog.at_level(logging.WARNING):
        s = next(s for s in load_strips(tmp_path, warn=logging.getLogger("t").warning) if s.name == NAME)
    assert s.date == dt.date(2016, 6, 8) and s.meta.acquired is None
    assert "no acquisition time" in caplog.text and f"{NAME}_mdf.txt" in caplog.text
