"""A synthetic full-field digital mammogram as archives store them: MG, 12 bits in 16, MONOCHROME2,
ImagerPixelSpacing, JPEG 2000 (lossless, a real 12-bit codestream from OpenJPEG).

    .venv/bin/python -m tests.mammogram OUT.dcm [--size 4664x3064] [--uncompressed]

The tests make small ones; the full size (4664 x 3064, about 14 million pixels) is the one the
time and memory for ``make upscale`` in docs/notebook/ were measured on.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SPACING = 0.07  # mm, a typical FFDM detector pitch


def breast(shape, seed=0):
    """uint16 values of 12 bits: a bright half-ellipse on the chest wall, dense tissue texture
    inside, a dark background, detector noise."""
    rows, cols = shape
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:rows, :cols]
    inside = ((y - rows / 2) / (0.45 * rows)) ** 2 + (x / (0.8 * cols)) ** 2 < 1
    coarse = rng.normal(0, 1, (rows // 64 + 2, cols // 64 + 2))
    texture = np.kron(coarse, np.ones((64, 64)))[:rows, :cols]
    out = np.where(inside, 2600 + 500 * texture, 150.0) + rng.normal(0, 30, shape)
    return np.clip(out, 0, 4095).astype(np.uint16)


def write_mammogram(path, shape=(4664, 3064), jpeg2000=True, seed=0, pixels=None):
    """Write the mammogram (``pixels``, or :func:`breast` of ``shape``) to ``path``; returns the
    stored pixels."""
    pixels = breast(shape, seed) if pixels is None else np.asarray(pixels, np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless if jpeg2000 else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "MG", "Synthetic^Mammogram", "SYNTH-0001"
    ds.ViewPosition, ds.ImageLaterality = "CC", "L"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [SPACING, SPACING]
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    if jpeg2000:
        import openjpeg  # pylibjpeg-openjpeg, pinned in tools/setup/requirements.txt
        ds.PixelData = encapsulate([openjpeg.encode(pixels, bits_stored=12)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.LossyImageCompression = "00"
    else:
        ds.PixelData = pixels.astype("<u2").tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path), write_like_original=False)
    return pixels


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tests.mammogram",
                                description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", default="4664x3064", help="ROWSxCOLUMNS (default %(default)s)")
    p.add_argument("--uncompressed", action="store_true", help="native pixels, not JPEG 2000")
    args = p.parse_args(argv)
    rows, cols = (int(n) for n in args.size.lower().split("x"))
    write_mammogram(args.out, (rows, cols), jpeg2000=not args.uncompressed)
    ds = pydicom.dcmread(str(args.out), stop_before_pixels=True)
    print(f"mammogram: {args.out}: {ds.Columns} x {ds.Rows}, {ds.BitsStored} bits, "
          f"{ds.file_meta.TransferSyntaxUID.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
