#!/usr/bin/env python3
"""Generates crates/fhir/src/generated.rs and generated_search.rs from the FHIR R4 npm packages.

Usage (from anywhere):
    scripts/fetch-fhir-packages.sh
    python3 tools/gen-fhir-tables/gen.py

Python 3 standard library only. The output is committed, so builds never need the packages.

Source package: hl7.fhir.r4.core@4.0.1 if it has been fetched, otherwise
hl7.fhir.r4.examples@4.0.1. The core package is not published on registry.npmjs.org, but the
examples package contains every resource of the R4 specification, including the
StructureDefinitions, SearchParameters and CompartmentDefinitions read here.

To add a table: write a function `gen_<name>(pkg) -> str` returning Rust source and append it
to the list of its output file in OUTPUTS.
"""

import glob
import json
import os
import re
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGES_DIR = os.path.join(REPO, ".cache", "fhir-packages")
SRC = os.path.join(REPO, "crates", "fhir", "src")
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


# ---------------------------------------------------------------------------------------------
# DATA_TYPES and CHOICE_ELEMENTS (used by the FHIRPath evaluator to type choice elements)


def is_core(sd):
    return sd.get("url", "").startswith("http://hl7.org/fhir/StructureDefinition/")


def data_types(pkg):
    types = set()
    for sd in pkg.resources("StructureDefinition"):
        if (
            sd.get("kind") in ("primitive-type", "complex-type")
            and sd.get("derivation") == "specialization"
            and is_core(sd)
        ):
            types.add(sd["type"])
    return sorted(types)


def gen_data_types(pkg):
    types = data_types(pkg)
    warn("%d data types" % len(types))
    out = [
        "/// Every FHIR R4 data type (primitive types start lower-case), sorted (binary-searchable).\n",
        "/// A choice element `value[x]` is serialised as `value` + the type name with its first\n",
        "/// letter upper-cased (`valueQuantity`, `valueDateTime`).\n",
        "pub const DATA_TYPES: &[&str] = &[\n",
    ]
    for t in types:
        out.append("    %s,\n" % rust_str(t))
    out.append("];\n")
    return "".join(out)


def gen_data_type_parents(pkg):
    known = set(data_types(pkg))
    pairs = []
    for sd in pkg.resources("StructureDefinition"):
        if sd.get("type") in known and sd.get("derivation") == "specialization" and is_core(sd):
            parent = sd.get("baseDefinition", "").rsplit("/", 1)[-1]
            if parent in known and parent not in ("Element", "BackboneElement"):
                pairs.append((sd["type"], parent))
    pairs.sort()
    out = [
        "/// Data types that specialise another data type (type, parent), sorted by type:\n",
        "/// `Age` is a `Quantity`, `code` is a `string`, `canonical` is a `uri`.\n",
        "pub const DATA_TYPE_PARENTS: &[(&str, &str)] = &[\n",
    ]
    for t, parent in pairs:
        out.append("    (%s, %s),\n" % (rust_str(t), rust_str(parent)))
    out.append("];\n")
    return "".join(out)


def choice_elements(pkg):
    names = set()
    for sd in pkg.resources("StructureDefinition"):
        if not is_core(sd) or sd.get("derivation") != "specialization":
            continue
        for el in sd.get("snapshot", {}).get("element", []):
            path = el.get("path", "")
            if path.endswith("[x]"):
                names.add(path.rsplit(".", 1)[-1][: -len("[x]")])
    return sorted(names)


def gen_choice_elements(pkg):
    names = choice_elements(pkg)
    warn("%d choice element names" % len(names))
    out = [
        "/// Names of the choice elements (`name[x]`) of any R4 resource or data type, sorted\n",
        "/// (binary-searchable): only these are looked up as `name` + type suffix.\n",
        "pub const CHOICE_ELEMENTS: &[&str] = &[\n",
    ]
    for n in names:
        out.append("    %s,\n" % rust_str(n))
    out.append("];\n")
    return "".join(out)


def summary_elements(pkg):
    """Top-level elements marked isSummary, per concrete resource type (choice names without [x])."""
    concrete = set(resource_types(pkg))
    out = {}
    for sd in pkg.resources("StructureDefinition"):
        if not is_core(sd) or sd.get("derivation") != "specialization" or sd.get("type") not in concrete:
            continue
        names = set()
        for el in sd.get("snapshot", {}).get("element", []):
            path = el.get("path", "")
            parts = path.split(".")
            if len(parts) == 2 and el.get("isSummary"):
                name = parts[1]
                names.add(name[: -len("[x]")] if name.endswith("[x]") else name)
        out[sd["type"]] = sorted(names)
    return out


def gen_summary_elements(pkg):
    table = summary_elements(pkg)
    warn("%d types with summary elements" % len(table))
    out = [
        "/// Top-level elements of each resource type that are in its summary (`isSummary`), for\n",
        "/// `_summary=true`; sorted by type, names sorted. Choice elements appear without `[x]`.\n",
        "pub const SUMMARY_ELEMENTS: &[(&str, &[&str])] = &[\n",
    ]
    for t in sorted(table):
        out.append("    (%s, &[%s]),\n" % (rust_str(t), ", ".join(rust_str(n) for n in table[t])))
    out.append("];\n")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# SEARCH_PARAMS (generated_search.rs)

LEADING_IDENT_RE = re.compile(r"^[\s(]*([A-Za-z_][A-Za-z0-9_]*)")


def domain_resource_types(pkg):
    out = set()
    for sd in pkg.resources("StructureDefinition"):
        if (
            sd.get("kind") == "resource"
            and sd.get("derivation") == "specialization"
            and is_core(sd)
            and sd.get("baseDefinition") == "http://hl7.org/fhir/StructureDefinition/DomainResource"
        ):
            out.add(sd["type"])
    return out


def spec_search_params(pkg):
    bundles = [b for b in pkg.resources("Bundle") if b.get("id") == "searchParams"]
    if len(bundles) != 1:
        sys.exit("gen-fhir-tables: expected one Bundle/searchParams, found %d" % len(bundles))
    return [e["resource"] for e in bundles[0]["entry"]]


def restrict_expression(sp, base):
    """The alternatives of the top-level union of sp's expression that apply to `base`."""
    expr = sp.get("expression") or ""
    if not expr:
        return ""
    keep = []
    for alt in split_top_level(expr):
        m = LEADING_IDENT_RE.match(alt)
        lead = m.group(1) if m else ""
        if lead == base or lead == "Resource":
            keep.append(alt)
        elif lead[:1].islower() and len(sp["base"]) == 1:
            # "name | alias" (InsurancePlan-name): relative to the resource; anchored to the
            # base so the expression never matches another type.
            warn("anchored %s: %s -> %s.%s" % (sp["id"], alt, base, alt))
            keep.append("%s.%s" % (base, alt))
    if not keep:
        warn("NO EXPRESSION for %s on %s: %s" % (sp["id"], base, expr))
    return " | ".join(keep)


RESOLVE_IS_RE = re.compile(r"\.where\(resolve\(\) is ([A-Za-z]+)\)\)?$")


def restrict_targets(sp, expression):
    """The spec's targets, narrowed to X when every alternative for this base ends with
    `.where(resolve() is X)` (clinical-patient lists Group and Patient for all its bases, but on
    Encounter its expression only admits Patient)."""
    targets = sorted(sp.get("target", []))
    if sp["type"] != "reference" or not expression:
        return targets
    kinds = set()
    for alt in split_top_level(expression):
        m = RESOLVE_IS_RE.search(alt)
        if not m:
            return targets
        kinds.add(m.group(1))
    narrowed = [t for t in targets if t in kinds]
    if narrowed != targets:
        warn("narrowed targets of %s on %s to %s" % (sp["id"], expression.split(".")[0], narrowed))
    return narrowed


def search_rows(pkg):
    sps = spec_search_params(pkg)
    by_url = {sp["url"]: sp for sp in sps}
    rows = {}
    for sp in sps:
        components = []
        for c in sp.get("component", []):
            target = by_url.get(c["definition"])
            if target is None:
                sys.exit("gen-fhir-tables: %s: unknown component %s" % (sp["id"], c["definition"]))
            components.append((target["code"], target["type"], c["expression"]))
        for base in sp["base"]:
            key = (base, sp["code"])
            if key in rows:
                sys.exit("gen-fhir-tables: duplicate search parameter %s %s" % key)
            expression = restrict_expression(sp, base)
            rows[key] = {
                "code": sp["code"],
                "base": base,
                "type": sp["type"],
                "expression": expression,
                "targets": restrict_targets(sp, expression),
                "components": components,
                "url": sp["url"],
            }
    return rows


PTYPE = {
    "number": "Number",
    "date": "Date",
    "string": "String",
    "token": "Token",
    "reference": "Reference",
    "composite": "Composite",
    "quantity": "Quantity",
    "uri": "Uri",
    "special": "Special",
}


def gen_search_params(pkg):
    rows = search_rows(pkg)
    keys = sorted(rows)
    index = {k: i for i, k in enumerate(keys)}
    warn("%d search parameter rows (base, code)" % len(keys))
    out = [
        "use crate::search_params::{Component, ParamType, SearchParamDef};\n\n",
        "/// Every (base, code) row of the R4 SearchParameters (Bundle/searchParams), sorted by\n",
        "/// (base, code). A multi-base parameter has one row per base whose expression keeps only\n",
        "/// the union alternatives for that base.\n",
        "#[rustfmt::skip]\n",
        "pub(crate) static PARAMS: &[SearchParamDef] = &[\n",
    ]
    for k in keys:
        r = rows[k]
        comps = "".join(
            "Component { code: %s, ptype: ParamType::%s, expression: %s }, "
            % (rust_str(code), PTYPE[t], rust_str(e))
            for code, t, e in r["components"]
        )
        out.append(
            "    SearchParamDef { code: %s, base: %s, ptype: ParamType::%s, expression: %s, "
            "targets: &[%s], components: &[%s], url: %s },\n"
            % (
                rust_str(r["code"]),
                rust_str(r["base"]),
                PTYPE[r["type"]],
                rust_str(r["expression"]),
                ", ".join(rust_str(t) for t in r["targets"]),
                comps.rstrip(", "),
                rust_str(r["url"]),
            )
        )
    out.append("];\n\n")

    domain = domain_resource_types(pkg)
    per_type = {}
    for rtype in resource_types(pkg) + ["DomainResource", "Resource"]:
        bases = [rtype, "Resource"]
        if rtype in domain or rtype == "DomainResource":
            bases.append("DomainResource")
        codes = {}
        for (base, code) in keys:
            if base in bases:
                if code in codes:
                    sys.exit("gen-fhir-tables: %s has two parameters %s" % (rtype, code))
                codes[code] = index[(base, code)]
        per_type[rtype] = [codes[c] for c in sorted(codes)]
    out.append(
        "/// For every resource type (and `DomainResource`, `Resource`), sorted by type: the indexes\n"
        "/// into [`PARAMS`] of every parameter applicable to it (its own and the inherited\n"
        "/// Resource/DomainResource ones), sorted by code.\n"
        "#[rustfmt::skip]\n"
        "pub(crate) static BY_TYPE: &[(&str, &[&SearchParamDef])] = &[\n"
    )
    for rtype in sorted(per_type):
        refs = ", ".join("&PARAMS[%d]" % i for i in per_type[rtype])
        out.append("    (%s, &[%s]),\n" % (rust_str(rtype), refs))
    out.append("];\n")
    return "".join(out)


OUTPUTS = [
    (
        "generated.rs",
        [gen_resource_types, gen_patient_compartment, gen_data_types, gen_data_type_parents, gen_choice_elements, gen_summary_elements],
    ),
    ("generated_search.rs", [gen_search_params]),
]


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
    for name, gens in OUTPUTS:
        body = "\n".join(gen(pkg) for gen in gens)
        path = os.path.join(SRC, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(header + "\n" + body)
        warn("wrote %s" % os.path.relpath(path, REPO))


if __name__ == "__main__":
    main()
