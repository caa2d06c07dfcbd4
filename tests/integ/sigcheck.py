#!/usr/bin/python3
"""sigcheck.py - structural checks of `signetctl dkim sign` output.

usage: sigcheck.py [--alg A] [--canon H/B] [--domain D] [--selector S]
                   [--time T] [--expire SECONDS] [--headers LIST]
                   ORIG SIGNED [ORIG SIGNED ...]

For each pair (the input given to signetctl and what it wrote) checks:
  - SIGNED has CRLF line ends only (no bare LF or CR);
  - it starts with one new DKIM-Signature field, folded with every physical
    line <= 78 columns and continuation lines starting with WSP;
  - the tag-list parses, has no duplicate tags, v=1, no l= tag, a bh= of 32
    bytes and a non-empty b=, and a=, c=, d=, s=, t=, x= as asked;
  - h= lists From once more than the message has From fields (oversigned),
    and, with --headers, every listed field present in the message;
  - bh= equals the body hash computed here (dkimpy's canonicalizer);
  - the rest of SIGNED is ORIG with its line ends made CRLF, a CRLF added
    after a last line that had none (the output ends with CRLF).
Prints every problem; exit 0 only if there are none.
"""
import base64
import hashlib
import re
import sys

from dkim.canonicalization import CanonicalizationPolicy

LINE_MAX = 78


def split_fields(block):
    """Header block (CRLF lines, no final empty line) -> list of raw fields."""
    fields = []
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields


def parse_tags(value):
    tags = {}
    dups = []
    for part in value.split(b";"):
        if not part.strip():
            continue
        if b"=" not in part:
            raise ValueError("tag without '=': %r" % part)
        k, v = part.split(b"=", 1)
        k = k.strip().decode("ascii")
        v = re.sub(rb"[ \t\r\n]+", b" ", v).strip()
        if k in tags:
            dups.append(k)
        tags[k] = v
    return tags, dups


def check_pair(orig_path, signed_path, opt):
    errs = []
    orig = open(orig_path, "rb").read()
    signed = open(signed_path, "rb").read()

    if re.search(rb"(?<!\r)\n", signed):
        errs.append("bare LF in output")
    if re.search(rb"\r(?!\n)", signed):
        errs.append("bare CR in output")
    if not signed.startswith(b"DKIM-Signature:"):
        errs.append("output does not start with 'DKIM-Signature:': %r" % signed[:40])
        return errs

    # The new field: first line plus its continuation lines.
    lines = signed.split(b"\r\n")
    n = 1
    while n < len(lines) and lines[n][:1] in (b" ", b"\t"):
        n += 1
    field_lines = lines[:n]
    for i, ln in enumerate(field_lines):
        if len(ln) > LINE_MAX:
            errs.append("signature line %d is %d > %d columns: %r" % (i + 1, len(ln), LINE_MAX, ln))
        if i and not ln.strip():
            errs.append("signature line %d is whitespace only" % (i + 1))
    field = b"\r\n".join(field_lines)
    rest = b"\r\n".join(lines[n:])

    try:
        tags, dups = parse_tags(field.split(b":", 1)[1])
    except ValueError as e:
        errs.append("tag-list: %s" % e)
        return errs
    if dups:
        errs.append("duplicate tags: %s" % dups)
    if tags.get("v") != b"1":
        errs.append("v= is %r, not 1" % tags.get("v"))
    if "l" in tags:
        errs.append("l= tag present")
    for t in ("a", "b", "bh", "d", "h", "s"):
        if t not in tags:
            errs.append("missing required tag %s=" % t)
    if errs:
        return errs
    bh = tags["bh"].replace(b" ", b"")
    b = tags["b"].replace(b" ", b"")
    try:
        if len(base64.b64decode(bh, validate=True)) != 32:
            errs.append("bh= is not 32 bytes")
        if len(base64.b64decode(b, validate=True)) == 0:
            errs.append("b= is empty")
    except Exception as e:  # noqa: BLE001
        errs.append("bad base64 in bh=/b=: %s" % e)

    c = tags.get("c", b"simple/simple").decode()
    if "/" not in c:
        c += "/simple"
    if opt.get("alg") and tags["a"].decode() != opt["alg"]:
        errs.append("a=%s, wanted %s" % (tags["a"].decode(), opt["alg"]))
    if opt.get("canon") and c != opt["canon"]:
        errs.append("c=%s, wanted %s" % (c, opt["canon"]))
    if opt.get("domain") and tags["d"].decode() != opt["domain"]:
        errs.append("d=%s, wanted %s" % (tags["d"].decode(), opt["domain"]))
    if opt.get("selector") and tags["s"].decode() != opt["selector"]:
        errs.append("s=%s, wanted %s" % (tags["s"].decode(), opt["selector"]))
    if opt.get("time"):
        if tags.get("t", b"").decode() != opt["time"]:
            errs.append("t=%r, wanted %s" % (tags.get("t"), opt["time"]))
    if opt.get("expire"):
        want = int(opt["time"]) + int(opt["expire"]) if opt.get("time") else None
        if "x" not in tags:
            errs.append("no x= tag although -x was given")
        elif want is not None and int(tags["x"]) != want:
            errs.append("x=%s, wanted t+x=%d" % (tags["x"].decode(), want))

    # The message after the signature must be the input with CRLF line ends,
    # every line ended: a last line without a newline gets its CRLF (what an
    # SMTP hop would add anyway; left unterminated, a last line with trailing
    # whitespace canonicalizes differently in dkimpy and Mail::DKIM).
    if not signed.endswith(b"\r\n"):
        errs.append("output does not end with CRLF (unterminated last line)")
    want = re.sub(rb"\r?\n", b"\r\n", orig)
    if want and not want.endswith(b"\r\n"):
        want += b"\r\n"
    if rest != want:
        i = 0
        while i < min(len(rest), len(want)) and rest[i] == want[i]:
            i += 1
        errs.append("message altered after the signature: first difference at byte %d "
                    "(got %r, wanted %r)" % (i, rest[max(0, i - 20):i + 20], want[max(0, i - 20):i + 20]))

    # h=: From oversigned, listed fields present.
    hdr_end = rest.find(b"\r\n\r\n")
    block = rest[:hdr_end] if hdr_end >= 0 else rest.rstrip(b"\r\n")
    names = [f.split(b":", 1)[0].strip().lower() for f in split_fields(block) if f]
    h = [x.strip().lower() for x in tags["h"].replace(b" ", b"").split(b":")]
    nfrom = names.count(b"from")
    if h.count(b"from") != nfrom + 1:
        errs.append("h= lists from %d times, message has %d From (wanted %d: oversigned)"
                    % (h.count(b"from"), nfrom, nfrom + 1))
    if b"dkim-signature" in h:
        errs.append("h= lists dkim-signature")
    if opt.get("headers"):
        for name in opt["headers"].lower().encode().split(b":"):
            if name and name in names and name not in h:
                errs.append("h= lacks %s although asked for and present" % name.decode())

    # bh= against dkimpy's canonicalizer.
    if hdr_end >= 0:
        body = rest[hdr_end + 4:]
    else:
        body = b""
    try:
        policy = CanonicalizationPolicy.from_c_value(c.encode())
        mine = base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())
        if mine != bh:
            errs.append("bh= %s but the %s body hash is %s" % (bh.decode(), c, mine.decode()))
    except Exception as e:  # noqa: BLE001
        errs.append("cannot compute body hash: %s" % e)
    return errs


def main(argv):
    opt = {}
    pairs = []
    keys = {"--alg": "alg", "--canon": "canon", "--domain": "domain", "--selector": "selector",
            "--time": "time", "--expire": "expire", "--headers": "headers"}
    i = 0
    while i < len(argv):
        if argv[i] in keys:
            opt[keys[argv[i]]] = argv[i + 1]
            i += 2
        else:
            pairs.append(argv[i])
            i += 1
    if not pairs or len(pairs) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    bad = 0
    for j in range(0, len(pairs), 2):
        errs = check_pair(pairs[j], pairs[j + 1], opt)
        for e in errs:
            print("sigcheck: %s: %s" % (pairs[j + 1], e), file=sys.stderr)
        bad += bool(errs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
