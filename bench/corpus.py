"""A deterministic corpus of synthetic DICOM objects for the benchmarks.

The same seed gives the same UIDs, attributes and pixel values, so two runs send the
same bytes. Pixel values are seeded noise: they cost the same to store as real images,
but a compressing transfer syntax would gain nothing on them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    generate_uid,
)

FAMILY_NAMES = ("Smith", "García", "Müller", "Nguyen", "Kowalski", "O'Brien", "Rossi", "Tanaka")
GIVEN_NAMES = ("Anna", "José", "Li", "Fatima", "Jürgen", "Mary Ann", "Pierre", "Yuki")
STUDY_DESCRIPTIONS = ("CT CHEST W/O CONTRAST", "MR BRAIN", "CR CHEST PA", "CT ABDOMEN PELVIS")


@dataclass(frozen=True)
class Study:
    """The patient and study attributes shared by the instances of one study."""

    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str


@dataclass
class CorpusStudy:
    """One written study: its attributes and its files, by series."""

    study: Study
    files: list[Path] = field(default_factory=list)
    series_instance_uids: list[str] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


class CorpusGenerator:
    """Writes seeded studies into ``folder``; UIDs derive from the seed and a counter."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.folder = folder
        self.seed = seed
        self.random = random.Random(seed)  # noqa: S311 (seeded test data, not secrets)
        self.numpy_random = np.random.default_rng(seed)
        self._uid_counter = 0

    def uid(self) -> str:
        self._uid_counter += 1
        return generate_uid(entropy_srcs=[str(self.seed), str(self._uid_counter)])

    def new_study(self, number: int) -> Study:
        family = self.random.choice(FAMILY_NAMES)
        given = self.random.choice(GIVEN_NAMES)
        year = self.random.randint(2015, 2026)
        month = self.random.randint(1, 12)
        day = self.random.randint(1, 28)
        return Study(
            study_instance_uid=self.uid(),
            patient_name=f"{family}^{given}",
            patient_id=f"BENCH-{self.seed}-{number:06d}",
            patient_birth_date=f"{self.random.randint(1930, 2020)}0{self.random.randint(1, 9)}15",
            patient_sex=self.random.choice("FMO"),
            study_date=f"{year:04d}{month:02d}{day:02d}",
            study_time=f"{self.random.randint(7, 19):02d}{self.random.randint(0, 59):02d}00",
            accession_number=f"ACC{self.seed:02d}{number:07d}",
            study_description=self.random.choice(STUDY_DESCRIPTIONS),
        )

    def write_ct_series(
        self, study: CorpusStudy, slices: int, *, rows: int = 512, columns: int = 512
    ) -> None:
        """Write one axial CT series of 16-bit slices (512 x 512 is about 0.5 MB each)."""
        self._write_image_series(
            study, "CT", CTImageStorage, slices, rows=rows, columns=columns, frames=1
        )

    def write_mr_series(self, study: CorpusStudy, slices: int) -> None:
        """Write one MR series of 256 x 256 16-bit slices."""
        self._write_image_series(
            study, "MR", MRImageStorage, slices, rows=256, columns=256, frames=1
        )

    def write_cr_image(self, study: CorpusStudy) -> None:
        """Write one 2048 x 2048 16-bit CR image (8 MB)."""
        self._write_image_series(
            study, "CR", ComputedRadiographyImageStorage, 1, rows=2048, columns=2048, frames=1
        )

    def write_multiframe(self, study: CorpusStudy, frames: int) -> None:
        """Write one multi-frame 16-bit secondary capture of 512 x 512 frames."""
        self._write_image_series(
            study,
            "OT",
            MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
            1,
            rows=512,
            columns=512,
            frames=frames,
        )

    def _write_image_series(
        self,
        study: CorpusStudy,
        modality: str,
        sop_class_uid: str,
        count: int,
        *,
        rows: int,
        columns: int,
        frames: int,
    ) -> None:
        series_instance_uid = self.uid()
        series_number = len(study.series_instance_uids) + 1
        study.series_instance_uids.append(series_instance_uid)
        folder = self.folder / study.study.study_instance_uid / series_instance_uid
        folder.mkdir(parents=True, exist_ok=True)
        for instance_number in range(1, count + 1):
            dataset = self._image_dataset(
                study.study, modality, sop_class_uid, series_instance_uid, series_number
            )
            dataset.InstanceNumber = instance_number
            dataset.SliceLocation = f"{instance_number * 1.25:.2f}"
            dataset.ImagePositionPatient = ["-250.0", "-250.0", f"{instance_number * 1.25:.2f}"]
            dataset.Rows = rows
            dataset.Columns = columns
            if frames > 1:
                dataset.NumberOfFrames = frames
            pixels = self.numpy_random.integers(0, 4096, size=rows * columns * frames)
            dataset.PixelData = pixels.astype("<u2").tobytes()
            path = folder / f"{instance_number:05d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            study.files.append(path)

    def _image_dataset(
        self,
        study: Study,
        modality: str,
        sop_class_uid: str,
        series_instance_uid: str,
        series_number: int,
    ) -> Dataset:
        dataset = Dataset()
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.SOPClassUID = sop_class_uid
        dataset.SOPInstanceUID = self.uid()
        dataset.StudyInstanceUID = study.study_instance_uid
        dataset.SeriesInstanceUID = series_instance_uid
        dataset.FrameOfReferenceUID = self.uid()
        dataset.Modality = modality

        dataset.PatientName = study.patient_name
        dataset.PatientID = study.patient_id
        dataset.PatientBirthDate = study.patient_birth_date
        dataset.PatientSex = study.patient_sex
        dataset.StudyDate = study.study_date
        dataset.StudyTime = study.study_time
        dataset.SeriesDate = study.study_date
        dataset.ContentDate = study.study_date
        dataset.ContentTime = study.study_time
        dataset.AccessionNumber = study.accession_number
        dataset.ReferringPhysicianName = "Referrer^Rita"
        dataset.StudyID = "1"
        dataset.StudyDescription = study.study_description
        dataset.SeriesNumber = series_number
        dataset.SeriesDescription = f"{modality} series {series_number}"
        dataset.BodyPartExamined = "CHEST"
        dataset.Manufacturer = "Noctis benchmark"

        dataset.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        dataset.PixelSpacing = ["0.7", "0.7"]
        dataset.SliceThickness = "1.25"
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = 16
        dataset.BitsStored = 12
        dataset.HighBit = 11
        dataset.PixelRepresentation = 0
        dataset.RescaleIntercept = "-1024"
        dataset.RescaleSlope = "1"
        dataset.WindowCenter = "40"
        dataset.WindowWidth = "400"

        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        return dataset

    def study(self, number: int) -> CorpusStudy:
        return CorpusStudy(self.new_study(number))


@dataclass
class Corpus:
    """The objects that the measures send: what each measure uses, by name."""

    ingest: list[Path]
    retrieval_study: CorpusStudy
    multiframe: CorpusStudy
    metadata_small: CorpusStudy
    metadata_large: CorpusStudy
    query_studies: list[CorpusStudy]

    @property
    def loaded_files(self) -> list[Path]:
        """Return the files loaded into each target before the retrieval and query measures."""
        files = [*self.retrieval_study.files, *self.multiframe.files]
        files += [*self.metadata_small.files, *self.metadata_large.files]
        for study in self.query_studies:
            files += study.files
        return files


@dataclass(frozen=True)
class CorpusSize:
    """How many objects each part of the corpus has."""

    ct_slices: int
    mr_slices: int
    cr_images: int
    multiframe_frames: int
    large_study_instances: int
    query_studies: int


QUICK_SIZE = CorpusSize(
    ct_slices=60,
    mr_slices=20,
    cr_images=1,
    multiframe_frames=10,
    large_study_instances=200,
    query_studies=20,
)
FULL_SIZE = CorpusSize(
    ct_slices=300,
    mr_slices=60,
    cr_images=2,
    multiframe_frames=30,
    large_study_instances=2000,
    query_studies=100,
)


def generate_corpus(folder: Path, size: CorpusSize, seed: int = 8) -> Corpus:
    """Write the corpus into ``folder`` and return what each measure uses.

    The ingest set is one CT series of 512 x 512 slices, one MR series, CR images and
    one multi-frame object. The metadata studies have 50 and
    ``size.large_study_instances`` instances of 64 x 64 pixels in 4 series, because
    their metadata, not their pixels, is what is measured. Each query study has 5
    small instances.
    """
    generator = CorpusGenerator(folder, seed)
    retrieval = generator.study(1)
    generator.write_ct_series(retrieval, size.ct_slices)
    generator.write_mr_series(retrieval, size.mr_slices)
    for _ in range(size.cr_images):
        generator.write_cr_image(retrieval)
    multiframe = generator.study(2)
    generator.write_multiframe(multiframe, size.multiframe_frames)

    metadata_small = generator.study(3)
    metadata_large = generator.study(4)
    for study, count in ((metadata_small, 50), (metadata_large, size.large_study_instances)):
        for _ in range(4):
            generator.write_ct_series(study, count // 4, rows=64, columns=64)

    query_studies = []
    for number in range(size.query_studies):
        study = generator.study(100 + number)
        generator.write_ct_series(study, 5, rows=32, columns=32)
        query_studies.append(study)
    return Corpus(
        ingest=[*retrieval.files, *multiframe.files],
        retrieval_study=retrieval,
        multiframe=multiframe,
        metadata_small=metadata_small,
        metadata_large=metadata_large,
        query_studies=query_studies,
    )


@dataclass(frozen=True)
class LongIngestCorpus:
    """The MR instances of the long-ingest memory measure, by file, and what they span."""

    files: list[Path]
    studies: int
    series: int

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)


def generate_long_ingest_corpus(folder: Path, instances: int, seed: int = 9) -> LongIngestCorpus:
    """Write ``instances`` MR slices of 256 x 256 (about 130 KB each) into ``folder``.

    Each study has 1 to 3 series of 16 to 48 slices, so 10,000 instances span about 150
    studies. The last series is cut short to reach ``instances`` exactly. The seed
    differs from :func:`generate_corpus`'s, so no UID repeats one of that corpus.
    """
    generator = CorpusGenerator(folder, seed)
    files: list[Path] = []
    studies = 0
    series = 0
    while len(files) < instances:
        studies += 1
        study = generator.study(studies)
        for _ in range(generator.random.randint(1, 3)):
            slices = min(generator.random.randint(16, 48), instances - len(files))
            if slices == 0:
                break
            generator.write_mr_series(study, slices)
            series += 1
            files.extend(study.files[-slices:])
    return LongIngestCorpus(files=files, studies=studies, series=series)
