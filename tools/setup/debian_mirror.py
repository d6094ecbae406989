"""Print the Debian mirror this machine's apt is configured with.

`make setup` fetches Caffe's source package from the mirror the machine already uses, so the
repository never names a host. Output is one line: ``URI KEYRING`` (KEYRING may be ``-``).
Runs under /usr/bin/python3 with the standard library only (it runs before the venv exists).
"""
import glob
import os
import sys

APT_ETC = os.environ.get("MEDSR_APT_ETC", "/etc/apt")
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def deb822_entries(text):
    """Yield dicts (lower-cased keys) of the stanzas of a deb822 .sources file."""
    stanza, key = {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t" and key:
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            stanza[key] = value.strip()


def one_line_entries(text):
    """Yield dicts shaped like deb822 stanzas from a one-line-style sources.list."""
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        options = {}
        if words[1].startswith("["):
            end = next(i for i, w in enumerate(words) if w.endswith("]"))
            for opt in " ".join(words[1:end + 1]).strip("[]").split():
                k, _, v = opt.partition("=")
                options[k.lower()] = v
            words = [words[0]] + words[end + 1:]
        yield {"types": words[0], "uris": words[1], "suites": words[2],
               "signed-by": options.get("signed-by", "")}


def all_entries():
    """Every enabled apt source entry on the machine, in apt's reading order."""
    files = [os.path.join(APT_ETC, "sources.list")]
    files += sorted(glob.glob(os.path.join(APT_ETC, "sources.list.d", "*")))
    for path in files:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if path.endswith(".sources"):
            entries = deb822_entries(text)
        elif path.endswith(".list") or path.endswith("sources.list"):
            entries = one_line_entries(text)
        else:
            continue
        for entry in entries:
            if entry.get("enabled", "yes").lower() != "no":
                yield entry


def is_debian_main_archive(entry):
    """True for the main Debian archive: not security, not a third-party repository."""
    uri = entry.get("uris", "").split()[0] if entry.get("uris") else ""
    suites = entry.get("suites", "").split()
    if not uri or uri.rstrip("/").endswith("-security") or not suites:
        return False
    if all(s.endswith("-security") for s in suites):
        return False
    keyring = entry.get("signed-by", "")
    return uri.rstrip("/").endswith("/debian") or "debian-archive" in keyring


def main():
    for entry in all_entries():
        if is_debian_main_archive(entry):
            uri = entry["uris"].split()[0].rstrip("/")
            keyring = entry.get("signed-by") or DEFAULT_KEYRING
            if not os.path.isfile(keyring):
                keyring = DEFAULT_KEYRING if os.path.isfile(DEFAULT_KEYRING) else "-"
            print(uri, keyring)
            return 0
    print("no Debian archive mirror found in %s/sources.list{,.d}" % APT_ETC, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
