#!/usr/bin/python3
"""jget.py - print a python expression over a JSON document.

usage: jget.py FILE EXPR...

The document is bound to `d` (and `sel(n)` gives d["selectors"] entry with
slot n, when d is an object with selectors).  Each EXPR is evaluated and
printed on its own line: strings as they are, other values as JSON.
Exit 1 when the file is not JSON or an expression fails (the error on
stderr), 2 on usage.
"""
import json
import sys


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        print("jget: %s: %s" % (argv[0], e), file=sys.stderr)
        return 1

    def sel(n, doc=None):
        doc = d if doc is None else doc
        for s in doc.get("selectors", []):
            if int(s.get("slot", 0)) == n:
                return s
        raise KeyError("no selector with slot %d" % n)

    for expr in argv[1:]:
        try:
            v = eval(expr, {"d": d, "sel": sel, "len": len, "int": int,
                            "str": str, "any": any, "all": all})
        except Exception as e:
            print("jget: %s: %r" % (expr, e), file=sys.stderr)
            return 1
        print(v if isinstance(v, str) else json.dumps(v))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
