//! FHIR R4 wire format for mamori: parsing and checking JSON resources, references,
//! transaction/batch Bundles, media types and OperationOutcome, the R4 search parameters
//! ([`search_params`]) and the FHIRPath subset their expressions need ([`fhirpath`]).
//!
//! Pure functions only: no I/O, no clock. Resources stay `serde_json::Value` (with
//! `arbitrary_precision` so decimals keep their lexical form and `preserve_order` so clients
//! get their element order back); this crate checks the generic JSON rules of the spec and the
//! few structural facts the server relies on, not full profile validation.

pub mod bundle;
pub mod compartment;
pub mod error;
pub mod fhirpath;
pub mod generated;
mod generated_search;
pub mod id;
pub mod media;
pub mod outcome;
pub mod reference;
pub mod resource_type;
pub mod search_params;
pub mod subset;
pub mod validate;
pub mod walk;

pub use error::FhirError;
pub use id::Id;
pub use reference::Reference;
pub use resource_type::ResourceType;
