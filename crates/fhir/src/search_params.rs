//! The search parameters of FHIR R4, for every resource type, generated from the
//! specification's own SearchParameter resources (`Bundle/searchParams` of the R4 package; see
//! `tools/gen-fhir-tables/gen.py`, output in `generated_search.rs`).
//!
//! A parameter defined for several bases (`clinical-patient` on 30 types) has one row per base,
//! whose expression keeps only that base's alternatives of the top-level `|` union, so
//! `lookup("Observation", "patient")` has the expression
//! `Observation.subject.where(resolve() is Patient)`. Rows of base `Resource` (`_id`,
//! `_lastUpdated`, `_tag`, `_profile`, `_security`, `_source`, `_content`, `_query`) apply to
//! every type, rows of base `DomainResource` (`_text`) to every type but Bundle, Binary and
//! Parameters. `_content`, `_query` and `_text` have no expression (`""`).
//!
//! Expressions are parsed once, on first use, by [`compiled`] / [`compiled_component`].

use std::sync::LazyLock;

use crate::fhirpath::{self, Expr};
use crate::generated_search::{BY_TYPE, PARAMS};

/// The type of a search parameter (`SearchParameter.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

/// One component of a composite parameter.
#[derive(Debug)]
pub struct Component {
    /// The code of the component's own parameter, e.g. "code".
    pub code: &'static str,
    /// The type of the component's own parameter.
    pub ptype: ParamType,
    /// Expression relative to the node the composite's expression selects, e.g.
    /// "value.as(Quantity)".
    pub expression: &'static str,
}

/// One search parameter as it applies to one base type.
#[derive(Debug)]
pub struct SearchParamDef {
    /// The name used in a search URL: "subject", "name", "_lastUpdated".
    pub code: &'static str,
    /// The resource type this row applies to ("Resource" rows apply to all types,
    /// "DomainResource" rows to all but Bundle, Binary and Parameters).
    pub base: &'static str,
    pub ptype: ParamType,
    /// The FHIRPath expression restricted to `base`; "" when the spec gives none.
    pub expression: &'static str,
    /// Reference target types, sorted (empty unless `ptype` is Reference). Narrowed to `X` when
    /// every alternative for this base ends in `.where(resolve() is X)`: `patient` on Encounter
    /// targets only Patient although clinical-patient lists Group too.
    pub targets: &'static [&'static str],
    /// Components of a composite parameter (empty otherwise).
    pub components: &'static [Component],
    /// Canonical URL of the SearchParameter.
    pub url: &'static str,
}

/// Every parameter applicable to a resource type: its own and the Resource/DomainResource ones,
/// sorted by code. Empty for an unknown type. `params_for("Resource")` gives the Resource rows.
pub fn params_for(rtype: &str) -> &'static [&'static SearchParamDef] {
    BY_TYPE.binary_search_by(|(t, _)| t.cmp(&rtype)).map_or(&[], |i| BY_TYPE[i].1)
}

/// The parameter `code` of resource type `rtype` (its own or an inherited one).
pub fn lookup(rtype: &str, code: &str) -> Option<&'static SearchParamDef> {
    let params = params_for(rtype);
    params.binary_search_by(|p| p.code.cmp(code)).ok().map(|i| params[i])
}

/// Every row of the table (one per base and code), sorted by (base, code).
pub fn all() -> &'static [SearchParamDef] {
    PARAMS
}

/// The expressions of every row and of its components, parsed once.
struct Compiled {
    params: Vec<Expr>,
    components: Vec<Vec<Expr>>,
}

static EMPTY: LazyLock<Expr> = LazyLock::new(Expr::empty);

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| Compiled {
    // Every table expression parses (test `every_table_expression_parses`); should one not,
    // it evaluates to nothing rather than failing searches of the type.
    params: PARAMS.iter().map(|p| fhirpath::parse(p.expression).unwrap_or_else(|_| Expr::empty())).collect(),
    components: PARAMS
        .iter()
        .map(|p| p.components.iter().map(|c| fhirpath::parse(c.expression).unwrap_or_else(|_| Expr::empty())).collect())
        .collect(),
});

/// Position of `def` in [`PARAMS`], if it is a row of the table.
fn index_of(def: &SearchParamDef) -> Option<usize> {
    let i = PARAMS.binary_search_by(|p| (p.base, p.code).cmp(&(def.base, def.code))).ok()?;
    std::ptr::eq(&PARAMS[i], def).then_some(i)
}

/// The compiled expression of a parameter of the table. A `SearchParamDef` built outside the
/// table (not possible through this API's lookups) gets the empty expression.
pub fn compiled(def: &SearchParamDef) -> &'static Expr {
    index_of(def).map_or(&EMPTY, |i| &COMPILED.params[i])
}

/// The compiled expression of component `i` of a composite parameter of the table, relative to
/// the node the composite's own expression selects. None if there is no such component.
pub fn compiled_component(def: &SearchParamDef, i: usize) -> Option<&'static Expr> {
    COMPILED.components.get(index_of(def)?)?.get(i)
}
