#!/usr/bin/env python3
"""Generates crates/fhir/src/generated.rs from the FHIR R4 npm packages.

Usage (from anywhere):
    scripts/fetch-fhir-packages.sh
    python3 tools/gen-fhir-tables/gen.py

Python 3 standard library only. The output is committed, so builds never need the packages.

Source package: hl7.fhir.r4.core@4.0.1 if it has been fetched, otherwise
hl7.fhir.r4.examples@4.0.1. The core package is not published on registry.npmjs.org, but the
examples package contains every resource of the R4 specification, including the
StructureDefinitions, SearchParameters and CompartmentDefinitions read here.

To add a table: write a function `gen_<name>(pkg) -> str` returning Rust source and append it
to TABLES.
"""

import glob
import json
import os
import re
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGES_DIR = os.path.join(REPO, ".cache", "fhir-packages")
OUTPUT = os.path.join(REPO, "crates", "fhir", "src", "generated.rs")
CANDIDATES = ["hl7.fhir.r4.core", "hl7.fhir.r4.examples"]


def warn(msg):
    print("gen-fhir-tables: " + msg, file=sys.stderr)


class Package:
    """Lazily loaded view of one extracted npm package."""

    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(PACKAGES_DIR, name, "package")
        with open(os.path.join(self.dir, "package.json"), encoding="utf-8") as f:
            self.version = json.load(f)["version"]
        self._by_type = None

    def resources(self, resource_type):
        """All resources of a type in the package (any file name layout)."""
        if self._by_type is None:
            self._by_type = {}
            for path in sorted(glob.glob(os.path.join(self.dir, "*.json"))):
                base = os.path.basename(path)
                if base in ("package.json", ".index.json"):
                    continue
                with open(path, encoding="utf-8") as f:
                    res = json.load(f)
                if isinstance(res, dict) and "resourceType" in res:
                    self._by_type.setdefault(res["resourceType"], []).append(res)
        return self._by_type.get(resource_type, [])


def find_package():
    for name in CANDIDATES:
        if os.path.isfile(os.path.join(PACKAGES_DIR, name, "package", "package.json")):
            return Package(name)
    sys.exit("gen-fhir-tables: no FHIR package found; run scripts/fetch-fhir-packages.sh")


def rust_str(s):
    return json.dumps(s)  # JSON string escapes are valid Rust for these ASCII identifiers


# ---------------------------------------------------------------------------------------------
# RESOURCE_TYPES


def resource_types(pkg):
    types = set()
    for sd in pkg.resources("StructureDefinition"):
        # Concrete base resources only: profiles are "constraint", and Resource/DomainResource
        # are abstract.
        if (
            sd.get("kind") == "resource"
            and sd.get("derivation") == "specialization"
            and not sd.get("abstract", False)
            and sd.get("url", "").startswith("http://hl7.org/fhir/StructureDefinition/")
        ):
            types.add(sd["type"])
    return sorted(types)


def gen_resource_types(pkg):
    types = resource_types(pkg)
    warn("%d resource types" % len(types))
    out = ["/// Every concrete FHIR R4 resource type, sorted (binary-searchable).\n"]
    out.append("pub const RESOURCE_TYPES: &[&str] = &[\n")
    for t in types:
        out.append("    %s,\n" % rust_str(t))
    out.append("];\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# PATIENT_COMPARTMENT

PATH_RE = re.compile(r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$")


def split_top_level(expr, sep="|"):
    """Splits a FHIRPath union at top level (not inside parentheses)."""
    parts, depth, cur = [], 0, ""
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def simplify(part, rtype):
    """Reduces one union member of a search expression to an element path relative to the
    resource root, or returns (None, reason)."""
    prev = None
    x = part.strip()
    while x != prev:
        prev = x
        # Drop a parenthesisation that encloses the whole term.
        if x.startswith("(") and x.endswith(")") and split_top_level(x[1:-1]) == [x[1:-1].strip()]:
            x = x[1:-1].strip()
        # (X as Reference) -> X
        x = re.sub(r"^(.*) as Reference$", r"\1", x).strip()
        # X.as(Reference) -> X
        x = re.sub(r"\.as\(Reference\)$", "", x)
        # X.where(resolve() is Patient) -> X: only "Patient/<id>" references count anyway.
        x = re.sub(r"\.where\(resolve\(\) is Patient\)$", "", x)
    if x.startswith(rtype + "."):
        x = x[len(rtype) + 1 :]
    else:
        # A shared parameter ("clinical-patient") lists members for other types too.
        first = re.match(r"^\(?([A-Z][A-Za-z]*)\.", x)
        if first and first.group(1) != rtype:
            return None, "other-type"
        return None, "no %s. prefix: %s" % (rtype, part)
    if not PATH_RE.match(x):
        return None, "not a plain path: %s" % part
    return x, None


def search_param_index(pkg):
    idx = {}
    for sp in pkg.resources("SearchParameter"):
        # The examples package also holds example SearchParameters ("example",
        # "example-reference") that duplicate real ones; they are not part of the spec.
        if sp.get("id", "").startswith("example"):
            continue
        for base in sp.get("base", []):
            idx.setdefault((base, sp["code"]), sp)
    return idx


def patient_compartment(pkg):
    comps = [
        c
        for c in pkg.resources("CompartmentDefinition")
        if c.get("url") == "http://hl7.org/fhir/CompartmentDefinition/patient"
    ]
    if len(comps) != 1:
        sys.exit("gen-fhir-tables: expected one Patient CompartmentDefinition, found %d" % len(comps))
    idx = search_param_index(pkg)
    known = set(resource_types(pkg))
    table = {}
    for entry in comps[0]["resource"]:
        rtype = entry["code"]
        if rtype not in known:
            warn("compartment names unknown type %s" % rtype)
            continue
        paths = []
        for param in entry.get("param", []):
            if param == "{def}":
                # Patient itself: "the resource itself" is handled in code, no path.
                continue
            sp = idx.get((rtype, param))
            if sp is None:
                warn("UNSIMPLIFIED %s: no SearchParameter %s" % (rtype, param))
                continue
            for part in split_top_level(sp.get("expression", "")):
                path, why = simplify(part, rtype)
                if path is None:
                    if why != "other-type":
                        warn("UNSIMPLIFIED %s.%s: %s" % (rtype, param, why))
                    continue
                if path not in paths:
                    paths.append(path)
        if paths:
            table[rtype] = paths
        elif entry.get("param") and entry.get("param") != ["{def}"]:
            warn("no paths for %s" % rtype)
    return table


def gen_patient_compartment(pkg):
    table = patient_compartment(pkg)
    warn("%d types in the Patient compartment" % len(table))
    out = [
        "/// Patient compartment (CompartmentDefinition/patient): for each resource type, the\n",
        "/// element paths (dot-separated, from the resource root) whose Reference puts the\n",
        "/// resource into the referenced Patient's compartment. Sorted by type. Patient itself\n",
        "/// (param `{def}`) is not listed: it is in its own compartment.\n",
        "#[rustfmt::skip] // one line per type, as generated\n",
        "pub const PATIENT_COMPARTMENT: &[(&str, &[&str])] = &[\n",
    ]
    for rtype in sorted(table):
        paths = ", ".join(rust_str(p) for p in table[rtype])
        out.append("    (%s, &[%s]),\n" % (rust_str(rtype), paths))
    out.append("];\n")
    return "".join(out)


TABLES = [gen_resource_types, gen_patient_compartment]


def main():
    pkg = find_package()
    warn("reading %s@%s" % (pkg.name, pkg.version))
    header = (
        "// @generated by tools/gen-fhir-tables/gen.py -- DO NOT EDIT.\n"
        "// Regenerate with: scripts/fetch-fhir-packages.sh && python3 tools/gen-fhir-tables/gen.py\n"
        "// Source: FHIR R4 npm package %s@%s (HL7 FHIR specification content, CC0-1.0).\n"
        "//! Tables generated from the FHIR R4 specification (see the header comment).\n"
        % (pkg.name, pkg.version)
    )
    # Inner doc comments must precede items, so the header is plain comments then `//!`.
    body = "\n".join(gen(pkg) for gen in TABLES)
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(header + "\n" + body)
    warn("wrote %s" % os.path.relpath(OUTPUT, REPO))


if __name__ == "__main__":
    main()
