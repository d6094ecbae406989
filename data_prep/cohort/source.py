"""SeriesSource: the slices one series gives a data set, read only when the build asks.

A slice source (the contract with data_prep.build): ``.name`` (unique in a data set) and
``.load()`` -> [data_prep.readers.Slice]. It holds paths and reader parameters only, so it pickles
small and a worker process can load it. Which slices it gives (``pick``) is decided from the
series' real slice count at load time, as split_central decides for one series today:

    ("all",)             every slice
    ("central", k)       the central k slices (all when the series has k or fewer)
    ("around", k, gap)   the slices outside the central k and ``gap`` slices each side of them
"""
from dataclasses import dataclass

from core.errors import DataError
from data_prep.readers import Slice, read_series, read_volume


@dataclass(frozen=True)
class SeriesSource:
    name: str          # <patient>_<series>.<role>: unique in the data set
    stem: str          # <patient>_<series>: each slice is named <stem>_<slice index>
    kind: str          # "dicom" (paths: the series' files) or "volume" (paths: the one file)
    paths: tuple
    pick: tuple
    rule: str = "auto"
    axis: int = 2

    def load(self):
        """The picked slices, named ``<stem>_<index>`` (index: 0-based, in the series' order)."""
        if self.kind == "dicom":
            slices, _ = read_series(self.paths, self.rule, source=self.stem)
        else:
            slices, _ = read_volume(self.paths[0], axis=self.axis, rule=self.rule)
        picked = picked_indices(len(slices), self.pick)
        return [Slice(f"{self.stem}_{k:04d}", slices[k].image, slices[k].source, k)
                for k in picked]


def central(n, k):
    """(start, stop) of the central ``k`` of ``n`` slices: split_central's block."""
    k = min(k, n)
    start = (n - k) // 2
    return start, start + k


def picked_indices(n, pick):
    """The indices ``pick`` chooses out of ``n`` slices (see the module docstring)."""
    if pick[0] == "all":
        return list(range(n))
    if pick[0] == "central":
        return list(range(*central(n, pick[1])))
    if pick[0] == "around":
        k, gap = pick[1], pick[2]
        if n < k + 2 * gap + 1:
            raise DataError(f"{n} slices are too few for {k} test slices, a gap of {gap} on each "
                            "side and at least one training slice")
        start, stop = central(n, k)
        return list(range(0, max(0, start - gap))) + list(range(stop + gap, n))
    raise ValueError(f"unknown pick {pick!r}")
