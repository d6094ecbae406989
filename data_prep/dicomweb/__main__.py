"""python -m data_prep.dicomweb: list, pull and store series on a PACS from the command line
(docs/pacs.md). The URL is --url or MEDSR_PACS_URL; the credentials come from the environment
only (MEDSR_PACS_CREDENTIALS, or MEDSR_PACS_USER/MEDSR_PACS_PASSWORD), never from here.

    --studies                                 the studies: StudyInstanceUID, PatientID, date, description
    --study UID [--series REGEX]              its series: SeriesInstanceUID, number, instances, description
    --study UID --series REGEX --pull DIR     each matching series into DIR/<number>_<description>_<uid>/
    --push DIR                                DIR's DICOM files, all or nothing (a failure deletes the new series)
"""
import sys

from core.args import command_line
from core.cli import guarded

PROG = "dicomweb"


def parse_args(argv):
    p = command_line("data_prep.dicomweb", "DICOMweb: list, pull and store series on a PACS",
                     short=PROG)
    p.add_argument("--url", help="the PACS (default: $MEDSR_PACS_URL)")
    p.add_argument("--studies", action="store_true", help="list the studies")
    p.add_argument("--study", help="a StudyInstanceUID: list its series, or --pull them")
    p.add_argument("--series", help="a regular expression searched in the SeriesDescription, "
                                    "case-insensitive (as make data's --series)")
    p.add_argument("--pull", metavar="DIR", help="fetch the matching series into a new folder each under DIR")
    p.add_argument("--push", metavar="DIR", help="store DIR's DICOM files, all or nothing")
    args = p.parse_args(argv)
    actions = [a for a in ("studies", "study", "push") if getattr(args, a)]
    if len(actions) != 1:
        p.error("give one of --studies, --study UID or --push DIR")
    if args.pull and not (args.study and args.series):
        p.error("--pull DIR needs --study UID and --series REGEX")
    if args.series and not args.study:
        p.error("--series needs --study UID")
    return args


def run(args):
    from data_prep.dicomweb import connect
    pacs = connect(args.url)
    if args.studies:
        for item in pacs.studies(includefield="all"):
            print("\t".join(_first(item, tag) for tag in ("0020000D", "00100020", "00080020", "00081030")))
    elif args.push:
        for uid, count in pacs.store_series(args.push).items():
            print(f"{PROG}: stored series {uid} ({count} instances)")
    elif args.pull:
        for s, folder in pacs.pull(args.study, args.series, args.pull):
            print(f"{PROG}: {s.description!r} ({s.instances} instances) -> {folder}")
    else:
        for s in pacs.series(args.study, args.series):
            print(f"{s.uid}\t{s.number if s.number is not None else ''}\t{s.instances}\t{s.description}")
    return 0


def _first(item, tag):
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return guarded(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
