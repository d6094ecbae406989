"""Read medical images as 2-D 8-bit grey slices for the SR pipeline.

Over 300 lines: one entry point and a short section per kind of input, read top
to bottom; it reads better whole.

``read_volume(path)`` accepts a file or a folder and returns ``(slices, info)``:
a list of :class:`Slice` (uint8, 2-D) and a dict describing what was done.
Files are found, read and decoded by :mod:`data_prep.io` (one table of formats);
this module turns what it reads into slices and applies the intensity rule.

Formats
    * DICOM: one file (every frame of a multi-frame file is a slice) or a folder
      holding one series (detection: :func:`data_prep.io.sniff`).
      Modality LUT (RescaleSlope/Intercept) is applied, then MONOCHROME1 is
      inverted (``x -> max + min - x`` over the series) so bright = high.
      Series order: ImagePositionPatient projected onto the slice normal
      (row x column of ImageOrientationPatient), ascending; else InstanceNumber;
      else file name.  Frames of a multi-frame file keep their stored order.
      A series that is not one evenly spaced stack (a missing slice, a duplicated
      position, a mixed stack: ``dicom_series.check_stack``) is read all the same,
      its slices being 2-D training images, with a warning and no slice spacing.
      A folder with several series (SeriesInstanceUID) is an error that lists
      them; ``read_volume(..., series=<uid>)`` picks one.  8-bit colour DICOM (RGB, YBR_FULL) gives
      MATLAB's ``rgb2ycbcr`` luma Y, as colour pictures do; other colour is an error.
    * Volumes (NIfTI ``.nii``, ``.nii.gz``, a ``.hdr``/``.img`` pair; NRRD; MetaImage): 3-D (trailing singleton dimensions are
      dropped, 2-D counts as one slice; 4-D with several volumes is an error).
      The volume is first reoriented to the closest RAS+ canonical orientation,
      so ``axis`` 0/1/2 = sagittal/coronal/axial; each slice is ``np.rot90``'d so
      that superior (sagittal, coronal) or anterior (axial) is up and the
      patient's left is on the image's left in coronal/axial (neurological
      convention).
    * PNG/TIFF/BMP/JPEG (8 or 16 bit; first page of a multi-page TIFF): colour is
      reduced to MATLAB's ``rgb2ycbcr`` luma Y (uint8 only; alpha is dropped).
      A folder of such images is read as independent 2-D images in natural name
      order ("img2" before "img10"); they may differ in size.

Intensity (see :mod:`data_prep.intensity`): DICOM series and volumes are
mapped with one rule computed over the whole volume; 2-D images are mapped one
image at a time (they are independent pictures, not slices of one scan).

Errors are :class:`DataError` with a one-line message naming the file.  Inside
a folder, bad files (unreadable, unsupported, wrong size, constant ...) are
skipped with a ``warning:`` on stderr; if nothing good remains, DataError.
Hidden files, ``DICOMDIR`` and subfolders are ignored.
"""
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DataError, warn
from data_prep import intensity
from data_prep.io import IMAGE_EXTS, by_name, dicom, format_of, images, list_files, stem
from data_prep.io.dicom_series import check_stack, group_series, pixel_spacing, sort_series
from data_prep.io.volume import as_3d, closest_canonical

__all__ = ["Slice", "read_volume", "read_series"]


@dataclass
class Slice:
    """One 2-D 8-bit slice.

    name: file stem, plus ``_fNNNN`` (frame) for multi-frame DICOM or
        ``_xNNNN``/``_yNNNN``/``_zNNNN`` (slice along axis 0/1/2) for volumes.
    image: uint8 array (H, W).
    source: the file it came from.
    index: 0-based position in the returned list (volume order).
    """
    name: str
    image: np.ndarray
    source: str
    index: int


def read_volume(path, axis=2, rule="auto", *, series=None, **rule_params):
    """Read a file or folder as a list of uint8 2-D slices.

    Args:
        path: DICOM file/folder, NIfTI file, image file or folder of images.
        axis: volumes only: RAS+ axis to slice along (0 sagittal, 1 coronal, 2 axial).
        rule: intensity rule, one of ``intensity.RULES``.
        series: DICOM folders only: SeriesInstanceUID to read when there are several.
        **rule_params: passed to :func:`data_prep.intensity.convert`
            (``center``, ``width``, ``bits_stored``, ``percentiles``, ``modality``).

    Returns:
        ``(slices, info)``; ``info`` keys: format ("dicom"/"nifti"/"image"),
        source, rule (applied; "mixed" if images in a folder differ),
        requested_rule, intensity_scope ("volume"/"image"), rule_params (the
        rule's parameters, e.g. the percentile window ``low``/``high``; for
        "image" a dict {slice name: parameters}), n_slices, shape ((H, W) or
        None if sizes differ), pixel_spacing ([row, col] mm or None),
        slice_spacing (mm or None; None for a DICOM series whose slices are
        not evenly spaced), sort_key, skipped (files skipped);
        DICOM adds modality and series_uid.
    """
    if axis not in (0, 1, 2):
        raise DataError(f"axis must be 0, 1 or 2 (got {axis!r})")
    intensity.check_rule(rule)  # fail before reading any file
    p = Path(path)
    if p.is_dir():
        return _read_folder(p, rule, series, rule_params)
    if not p.is_file():
        raise DataError(f"{p}: no such file or folder")
    fmt = format_of(p)
    if fmt.kind == "volume":
        return _affine_volume(p, fmt, axis, rule, rule_params)
    loaded = [(p, _load(p, fmt))]
    if fmt.kind == "dicom":
        return _dicom_volume(loaded, p, rule, series, rule_params, None)
    return _image_volume(loaded, p, rule, rule_params, None)


def _load(path, fmt):
    """What the slice builders take: a DICOM dataset, or a 2-D picture reduced to grey."""
    data = fmt.read(path)
    pages = images.page_count(path) if fmt.kind == "image" else 1
    if pages > 1:
        warn(f"{path}: a TIFF of {pages} pages: only the first is read (inference.upscale upscales "
             "them all)")
    return images.to_grey(data, path) if fmt.kind == "image" else data


def read_series(paths, rule="auto", *, source=None, **rule_params):
    """One DICOM series given as its files (anywhere: a series is its SeriesInstanceUID, not a
    folder), read as :func:`read_volume` reads a folder of one series: sorted, one intensity rule
    over the series; a file that cannot be read or decoded is skipped with a warning.
    ``source`` names the series in messages and ``info``. Returns ``(slices, info)``."""
    intensity.check_rule(rule)
    paths = [Path(p) for p in paths]
    source = source or (paths[0].parent if paths else "<no files>")
    skipped = []
    loaded = _load_all([(p, by_name("dicom")) for p in paths], skipped)
    if not loaded:
        raise DataError(f"{source}: no DICOM file of the series could be read")
    return _dicom_volume(loaded, source, rule, None, rule_params, skipped)


# --------------------------------------------------------------------- folders

def _read_folder(folder, rule, series, rule_params):
    """Read a folder of DICOM files (one series) or of 2-D images."""
    files = list_files(folder)
    if not files:
        raise DataError(f"{folder}: folder has no files (subfolders are not searched)")
    skipped = []
    groups = {"dicom": [], "image": []}
    for f in files:
        try:
            fmt = format_of(f)
        except DataError as exc:  # unreadable or unsupported: its message names the file
            warn(f"{exc}; skipped")
            skipped.append(str(f))
            continue
        if fmt.kind in groups:
            groups[fmt.kind].append((f, fmt))
        else:
            _skip(f, f"{fmt.title} volumes are read one file at a time; give the file itself",
                  skipped)
    dicoms, pictures = (_load_all(groups[k], skipped) for k in ("dicom", "image"))
    if dicoms and pictures:
        raise DataError(f"{folder}: holds both DICOM and 2-D image files; "
                        "put them in separate folders")
    if dicoms:
        return _dicom_volume(dicoms, folder, rule, series, rule_params, skipped)
    if pictures:
        return _image_volume(pictures, folder, rule, rule_params, skipped)
    raise DataError(f"{folder}: no readable DICOM or 2-D image files "
                    f"({len(skipped)} skipped, see warnings)")


def _skip(path, reason, skipped):
    """Warn about a bad file in a folder and remember it."""
    warn(f"{path}: {reason}; skipped")
    skipped.append(str(path))


def _try(func, item, skipped):
    """func(item); with ``skipped`` (a folder) a DataError skips the item -> None."""
    if skipped is None:
        return func(item)
    try:
        return func(item)
    except DataError as exc:
        warn(f"{exc}; skipped")
        skipped.append(str(item))
        return None


def _load_all(files, skipped):
    """[(path, loaded)] for the (path, format) pairs that load; bad ones are skipped."""
    pairs = ((p, _try(lambda q, f=fmt: _load(q, f), p, skipped)) for p, fmt in files)
    return [(p, v) for p, v in pairs if v is not None]


def _info(fmt, source, rinfo, n, shape, skipped, **extra):
    """The info dict common to all formats."""
    info = {"format": fmt, "source": str(source), "rule": rinfo.pop("rule"),
            "requested_rule": rinfo.pop("requested_rule"), "intensity_scope": "volume",
            "rule_params": rinfo, "n_slices": n, "shape": shape,
            "pixel_spacing": None, "slice_spacing": None, "sort_key": None,
            "skipped": list(skipped or [])}
    info.update(extra)
    return info


# ----------------------------------------------------------------------- DICOM

def _dicom_volume(loaded, source, rule, series, rule_params, skipped):
    """Pick one series, sort it, decode, invert MONOCHROME1 and map to uint8."""
    chosen, uid = _pick_series(loaded, source, series)
    ordered, sort_key, _ = sort_series(chosen)
    decoded = _decode_series(ordered, skipped)
    spacing = _even_spacing([(path, ds) for path, ds, _ in decoded], source)
    stack = np.concatenate([arr for _, _, arr in decoded])
    flags = np.concatenate([[dicom.is_monochrome1(ds)] * len(arr) for _, ds, arr in decoded])
    stack = dicom.invert_monochrome1(stack, flags)
    ds0 = decoded[0][1]
    modality = str(ds0.get("Modality", "") or "").strip() or None
    params = {"modality": modality, "bits_stored": dicom.bits_stored(ds for _, ds, _ in decoded),
              **rule_params, "source": str(source)}
    out, rinfo = intensity.convert(stack, rule, **params)
    slices = [Slice(name, img, str(path), i)
              for i, ((name, path), img) in enumerate(zip(_frame_names(decoded), out))]
    return slices, _info("dicom", source, rinfo, len(slices), out.shape[1:], skipped,
                         pixel_spacing=pixel_spacing(ds0), slice_spacing=spacing,
                         sort_key=sort_key, modality=modality, series_uid=uid)


def _pick_series(loaded, source, series):
    """The files of one SeriesInstanceUID; several without ``series`` -> DataError."""
    by_uid = group_series(loaded)
    if series is not None:
        if series not in by_uid:
            raise DataError(f"{source}: no DICOM series {series!r} here "
                            f"(found: {', '.join(by_uid)})")
        return by_uid[series], series
    if len(by_uid) > 1:
        listing = "; ".join(f"{uid or '<no UID>'} ({len(items)} files, "
                            f"{items[0][1].get('SeriesDescription', '')!s})"
                            for uid, items in by_uid.items())
        raise DataError(f"{source}: holds {len(by_uid)} DICOM series; point at a folder "
                        f"with one series (copy each series into a folder of its own): {listing}")
    uid, items = next(iter(by_uid.items()))
    return items, uid


def _even_spacing(items, source):
    """The slice spacing of the sorted series, or None (with a warning that says what is done
    instead) when its slices are not one evenly spaced stack: the data set takes them one by one
    as 2-D slices, which needs no spacing."""
    try:
        return check_stack(items, source)
    except DataError as exc:
        warn(f"{exc}; data_prep uses the slices one by one as 2-D images, in this order, and "
             "records no slice spacing")
        return None


def _decode_series(ordered, skipped):
    """[(path, ds, frames (n, H, W))]; in a folder, undecodable files and files
    whose size differs from the series' most common size are skipped."""
    decoded = []
    for path, ds in ordered:
        arr = _try(lambda p, d=ds: _grey_values(d, p), path, skipped)
        if arr is not None:
            decoded.append((path, ds, arr))
    if not decoded:
        raise DataError(f"{ordered[0][0].parent}: no DICOM file could be decoded")
    counts = Counter()
    for _, _, arr in decoded:
        counts[arr.shape[1:]] += len(arr)
    rows, cols = counts.most_common(1)[0][0]
    kept = []
    for path, ds, arr in decoded:
        if arr.shape[1:] == (rows, cols):
            kept.append((path, ds, arr))
        else:  # only possible in a folder (a single file has one size)
            _skip(path, f"size {arr.shape[2]}x{arr.shape[1]} differs from the "
                        f"series' {cols}x{rows}", skipped)
    return kept


def _grey_values(ds, path):
    """A DICOM file's frames as grey: the modality values, or the luma Y (MATLAB's rgb2ycbcr,
    uint8, as colour pictures) of 8-bit colour (ultrasound, endoscopy)."""
    if not dicom.is_colour(ds):
        return dicom.modality_values(ds, path)
    from data_prep.matlab import rgb2ycbcr
    return np.stack([rgb2ycbcr(frame) for frame in dicom.colour_frames(ds, path)])


def _frame_names(decoded):
    """[(slice name, path)]: file stem, plus _fNNNN for multi-frame files."""
    exts = by_name("dicom").extensions
    names = []
    for path, _, arr in decoded:
        name = stem(path, exts)
        if len(arr) == 1:
            names.append((name, path))
        else:
            names.extend((f"{name}_f{k:04d}", path) for k in range(len(arr)))
    return names


# --------------------------------------------------------------------- volumes

def _affine_volume(path, fmt, axis, rule, rule_params):
    """Slices of a volume along a RAS+ axis, rotated for display."""
    vol = fmt.read(path)
    data, zooms = closest_canonical(as_3d(vol.values, path), vol.affine)
    # rot90 of each (i, j) slice: rows = j reversed (anterior/superior up), cols = i.
    stack = np.rot90(np.moveaxis(data, axis, 0), k=1, axes=(1, 2))
    out, rinfo = intensity.convert(stack, rule, **{**rule_params, "source": str(path)})
    i, j = [a for a in range(3) if a != axis]
    name, letter = stem(path, fmt.extensions), "xyz"[axis]
    slices = [Slice(f"{name}_{letter}{k:04d}", img, str(path), k) for k, img in enumerate(out)]
    return slices, _info(fmt.name, path, rinfo, len(slices), out.shape[1:], None,
                         pixel_spacing=[zooms[j], zooms[i]], slice_spacing=zooms[axis],
                         sort_key=f"RAS+ axis {axis}, ascending")


# ---------------------------------------------------------------------- images

def _image_volume(loaded, source, rule, rule_params, skipped):
    """Map each 2-D image on its own (independent pictures, sizes may differ)."""
    slices, per_image = [], {}
    for path, grey in loaded:
        params = {**rule_params, "source": str(path)}
        converted = _try(lambda p: intensity.convert(grey, rule, **params), path, skipped)
        if converted is None:
            continue
        out, rinfo = converted
        name = stem(path, IMAGE_EXTS)
        if name in per_image:  # "a.png" and "a.tif": keep names unique
            name = path.name
        slices.append(Slice(name, out, str(path), len(slices)))
        per_image[name] = {k: v for k, v in rinfo.items() if k != "requested_rule"}
    if not slices:
        raise DataError(f"{source}: no usable images ({len(skipped or [])} skipped, see warnings)")
    rules = {r["rule"] for r in per_image.values()}
    shapes = {s.image.shape for s in slices}
    rinfo = {"rule": rules.pop() if len(rules) == 1 else "mixed", "requested_rule": rule}
    info = _info("image", source, rinfo, len(slices),
                 shapes.pop() if len(shapes) == 1 else None, skipped,
                 sort_key="natural file name" if len(slices) > 1 else "single file")
    info.update(intensity_scope="image", rule_params=per_image)
    return slices, info
