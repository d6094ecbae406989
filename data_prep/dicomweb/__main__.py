"""python -m data_prep.dicomweb: list, pull and store series on a PACS from the command line
(docs/pacs.md). The URL is --url or MEDSR_PACS_URL; the credentials come from the environment
only (MEDSR_PACS_CREDENTIALS, or MEDSR_PACS_USER/MEDSR_PACS_PASSWORD), never from here.

    studies                                   the studies: StudyInstanceUID, PatientID, date, description
    series --study UID [--series REGEX]       a study's series: SeriesInstanceUID, number, instances, description
    pull   --study UID --series REGEX --out DIR   each matching series into DIR/<number>_<description>_<uid>/
    push   --in DIR                           the DICOM files of DIR, all or nothing (a failure deletes the new series)
"""
import sys

from core.args import command_line
from core.cli import guarded

PROG = "dicomweb"


def parse_args(argv):
    p = command_line("data_prep.dicomweb", "DICOMweb: list, pull and store series on a PACS",
                     short=PROG)
    p.add_argument("--url", help="the PACS (default: $MEDSR_PACS_URL)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("studies", short=PROG, help="list the studies")
    s = sub.add_parser("series", short=PROG, help="list a study's series")
    s.add_argument("--study", required=True)
    s.add_argument("--series", help="a regular expression the SeriesDescription matches in full")
    s = sub.add_parser("pull", short=PROG, help="fetch the matching series into a folder each")
    s.add_argument("--study", required=True)
    s.add_argument("--series", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("push", short=PROG, help="store a folder's DICOM files, all or nothing")
    s.add_argument("--in", dest="input", required=True)
    return p.parse_args(argv)


def run(args):
    from data_prep.dicomweb import connect
    pacs = connect(args.url)
    if args.command == "studies":
        for item in pacs.studies(includefield="all"):
            print("\t".join(_first(item, tag) for tag in ("0020000D", "00100020", "00080020", "00081030")))
    elif args.command == "series":
        for s in pacs.series(args.study, args.series):
            print(f"{s.uid}\t{s.number if s.number is not None else ''}\t{s.instances}\t{s.description}")
    elif args.command == "pull":
        for s, folder in pacs.pull(args.study, args.series, args.out):
            print(f"{PROG}: {s.description!r} ({s.instances} instances) -> {folder}")
    else:
        for uid, count in pacs.store_series(args.input).items():
            print(f"{PROG}: stored series {uid} ({count} instances)")
    return 0


def _first(item, tag):
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
