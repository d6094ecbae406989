"""Your own cohort: a study tree of many patients in, a data set split by patient out.

    walk.py         every file under the inputs, any depth; DICOM headers only (in parallel)
    volume_header.py  a volume's slices along each axis, from its header alone
    plan.py         files -> series (by SeriesInstanceUID) -> chosen or left out, with why;
                    the split by patient
    source.py       SeriesSource: one series' slices, read when the build asks (picklable)
    summary.py      the manifest's cohort part and the one-screen summary
"""
