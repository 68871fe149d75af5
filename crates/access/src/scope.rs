//! SMART on FHIR scopes (AUTH-6): parsed strictly at the edge, intersected with what a client is
//! registered for, and applied as a narrowing of the policy's [`crate::Rights`] — a scope can
//! take rights away, never add any.
//!
//! Accepted forms (SMART App Launch 2.x, with the 1.x forms mapped to 2.x):
//!
//! ```text
//! user/Observation.rs    system/*.cruds    user/Patient.read (= .rs)   user/*.write (= .cud)
//! user/*.* (= .cruds)    offline_access    online_access
//! launch   launch/patient   openid   fhirUser
//! ```
//!
//! `patient/…` scopes parse here too; which contexts an interface grants is the server's call
//! (ACL-4: at the patient interface the signed-in patient is the context; at the staff one only
//! an EHR launch (`launch` + a launch context) provides one).
//!
//! Refused as `invalid_scope` (not silently dropped): anything else, including granular scopes
//! with a `?query` and other launch contexts (`launch/encounter`).

use std::fmt;
use std::str::FromStr;

use mamori_fhir::resource_type::ResourceType;

/// The SMART v2 interactions, as bits in the order they are written (`c r u d s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    const ORDER: [(Interaction, char); 5] = [
        (Interaction::Create, 'c'),
        (Interaction::Read, 'r'),
        (Interaction::Update, 'u'),
        (Interaction::Delete, 'd'),
        (Interaction::Search, 's'),
    ];

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of interactions (`cruds` bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms(pub u8);

impl Perms {
    pub const ALL: Perms = Perms(0b1_1111);

    pub fn has(self, i: Interaction) -> bool {
        self.0 & i.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn letters(self) -> String {
        Interaction::ORDER.iter().filter(|(i, _)| self.has(*i)).map(|(_, c)| *c).collect()
    }

    /// v2 `cruds` (each letter at most once, in this order) or v1 `read`/`write`/`*`.
    fn parse(s: &str) -> Option<Perms> {
        match s {
            "read" => return Some(Perms(Interaction::Read.bit() | Interaction::Search.bit())),
            "write" => {
                return Some(Perms(Interaction::Create.bit() | Interaction::Update.bit() | Interaction::Delete.bit()));
            }
            "*" => return Some(Perms::ALL),
            _ => {}
        }
        let mut bits = 0u8;
        let mut at = 0usize;
        for ch in s.chars() {
            let pos = Interaction::ORDER.iter().skip(at).position(|(_, c)| *c == ch)? + at;
            bits |= Interaction::ORDER[pos].0.bit();
            at = pos + 1;
        }
        (bits != 0).then_some(Perms(bits))
    }
}

/// Whose data a clinical scope is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    /// Whatever the signed-in user may see (staff accounts).
    User,
    /// A backend service without a user (client credentials).
    System,
    /// The signed-in patient's own compartment (patient-facing apps at the patient interface).
    Patient,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::User => "user",
            Context::System => "system",
            Context::Patient => "patient",
        }
    }
}

/// One clinical scope: context, resource type (`None` = `*`) and interactions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClinicalScope {
    pub context: Context,
    pub rtype: Option<ResourceType>,
    pub perms: Perms,
}

impl fmt::Display for ClinicalScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.rtype.map(|t| t.as_str()).unwrap_or("*");
        write!(f, "{}/{}.{}", self.context.as_str(), t, self.perms.letters())
    }
}

/// A scope string that is not one this server grants; the message names the scope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScopeError(pub String);

/// A parsed, validated scope set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet {
    pub clinical: Vec<ClinicalScope>,
    pub offline_access: bool,
    pub online_access: bool,
    /// `launch`: the app was launched from the EHR and asks for its launch context.
    pub launch: bool,
    /// `launch/patient`: the app asks for a patient context (standalone launch).
    pub launch_patient: bool,
    /// `openid`: an OpenID Connect ID token.
    pub openid: bool,
    /// `fhirUser`: the ID token names the user's FHIR resource.
    pub fhir_user: bool,
}

/// The scopes that are flags of a [`ScopeSet`], as written.
const FLAGS: [&str; 6] = ["launch", "launch/patient", "openid", "fhirUser", "online_access", "offline_access"];

const MAX_SCOPES: usize = 64;

fn clip(s: &str) -> String {
    s.chars().take(60).filter(|c| !c.is_control()).collect()
}

impl FromStr for ScopeSet {
    type Err = ScopeError;

    /// Space-separated scopes (RFC 6749 §3.3); any unknown one refuses the whole request.
    fn from_str(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut out = ScopeSet::default();
        let words: Vec<&str> = s.split(' ').filter(|w| !w.is_empty()).collect();
        if words.len() > MAX_SCOPES {
            return Err(ScopeError(format!("at most {MAX_SCOPES} scopes may be requested")));
        }
        for w in words {
            match w {
                "offline_access" => out.offline_access = true,
                "online_access" => out.online_access = true,
                "launch" => out.launch = true,
                "launch/patient" => out.launch_patient = true,
                "openid" => out.openid = true,
                "fhirUser" => out.fhir_user = true,
                w if w.starts_with("launch/") => {
                    return Err(ScopeError(format!(
                        "scope '{}': only the patient launch context (launch/patient) is supported",
                        clip(w)
                    )));
                }
                _ => {
                    let c = parse_clinical(w)?;
                    if !out.clinical.contains(&c) {
                        out.clinical.push(c);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse_clinical(w: &str) -> Result<ClinicalScope, ScopeError> {
    let unknown = || ScopeError(format!("unknown or unsupported scope '{}'", clip(w)));
    if w.contains('?') {
        return Err(ScopeError(format!(
            "scope '{}': granular scopes with search parameters are not supported",
            clip(w)
        )));
    }
    let (ctx, rest) = w.split_once('/').ok_or_else(unknown)?;
    let context = match ctx {
        "user" => Context::User,
        "system" => Context::System,
        "patient" => Context::Patient,
        _ => return Err(unknown()),
    };
    let (t, p) = rest.rsplit_once('.').ok_or_else(unknown)?;
    let rtype = match t {
        "*" => None,
        t => Some(ResourceType::parse(t).map_err(|_| unknown())?),
    };
    let perms = Perms::parse(p).ok_or_else(unknown)?;
    Ok(ClinicalScope { context, rtype, perms })
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.clinical.iter().map(ToString::to_string).collect();
        parts.extend(FLAGS.iter().zip(self.flags()).filter(|(_, on)| *on).map(|(name, _)| name.to_string()));
        f.write_str(&parts.join(" "))
    }
}

impl ScopeSet {
    /// What may be granted: the requested scopes narrowed to what `registered` allows (per
    /// context, type ∩ type and interactions ∩ interactions). Never more than either side.
    pub fn intersect(&self, registered: &ScopeSet) -> ScopeSet {
        let mut clinical: Vec<ClinicalScope> = Vec::new();
        for want in &self.clinical {
            for have in registered.clinical.iter().filter(|h| h.context == want.context) {
                let rtype = match (want.rtype, have.rtype) {
                    (None, t) | (t, None) => t,
                    (Some(a), Some(b)) if a == b => Some(a),
                    _ => continue,
                };
                let perms = Perms(want.perms.0 & have.perms.0);
                if perms.is_empty() {
                    continue;
                }
                let c = ClinicalScope { context: want.context, rtype, perms };
                if !clinical.contains(&c) {
                    clinical.push(c);
                }
            }
        }
        ScopeSet {
            clinical,
            offline_access: self.offline_access && registered.offline_access,
            online_access: self.online_access && registered.online_access,
            launch: self.launch && registered.launch,
            launch_patient: self.launch_patient && registered.launch_patient,
            openid: self.openid && registered.openid,
            fhir_user: self.fhir_user && registered.fhir_user,
        }
    }

    /// The flag scopes, in the order of [`FLAGS`].
    fn flags(&self) -> [bool; 6] {
        [self.launch, self.launch_patient, self.openid, self.fhir_user, self.online_access, self.offline_access]
    }

    /// Whether any clinical scope is of `context`.
    pub fn has_context(&self, context: Context) -> bool {
        self.clinical.iter().any(|c| c.context == context)
    }

    /// Keeps only scopes of `context`.
    pub fn only(&self, context: Context) -> ScopeSet {
        ScopeSet { clinical: self.clinical.iter().filter(|c| c.context == context).cloned().collect(), ..self.clone() }
    }

    /// Whether every scope of `self` is within `other` (a refresh may narrow, never widen).
    pub fn within(&self, other: &ScopeSet) -> bool {
        self.intersect(other) == *self
    }

    /// The interactions the scopes allow on one resource type.
    pub fn perms_for(&self, rtype: &str) -> Perms {
        let mut bits = 0u8;
        for c in &self.clinical {
            if c.rtype.is_none_or(|t| t.as_str() == rtype) {
                bits |= c.perms.0;
            }
        }
        Perms(bits)
    }

    /// The interactions the scopes allow on at least one type.
    pub fn perms_any(&self) -> Perms {
        Perms(self.clinical.iter().fold(0, |b, c| b | c.perms.0))
    }

    /// The types whose resources may be disclosed (read or search); `None`: every type.
    pub fn viewable_types(&self) -> Option<Vec<String>> {
        let view = Interaction::Read.bit() | Interaction::Search.bit();
        if self.clinical.iter().any(|c| c.rtype.is_none() && c.perms.0 & view != 0) {
            return None;
        }
        let mut out: Vec<String> = self
            .clinical
            .iter()
            .filter(|c| c.perms.0 & view != 0)
            .filter_map(|c| c.rtype.map(|t| t.as_str().to_string()))
            .collect();
        out.sort();
        out.dedup();
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        s.parse().expect(s)
    }

    #[test]
    fn auth6_v2_and_v1_scopes_parse_strictly() {
        let s = set("user/Observation.rs system/*.cruds offline_access");
        assert_eq!(s.to_string(), "user/Observation.rs system/*.cruds offline_access");
        assert_eq!(set("user/Patient.read").to_string(), "user/Patient.rs");
        assert_eq!(set("user/*.write").to_string(), "user/*.cud");
        assert_eq!(set("user/*.*").to_string(), "user/*.cruds");
        assert_eq!(set("patient/*.read patient/Observation.rs").to_string(), "patient/*.rs patient/Observation.rs");
        assert!(set("patient/*.rs").intersect(&set("user/*.rs")).clinical.is_empty());
        for bad in [
            "user/Observation.sr",
            "user/Observation.rr",
            "user/Observation.x",
            "user/Observation.",
            "user/Nonsense.rs",
            "patient/Observation.rs?category=laboratory",
            "user/Observation.rs?category=laboratory",
            "launch/encounter",
            "launch/Patient",
            "fhiruser",
            "user/Observation",
            "practitioner/*.rs",
        ] {
            assert!(bad.parse::<ScopeSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auth6_launch_and_openid_scopes_parse_and_are_granted_only_if_registered() {
        let s = set("fhirUser launch patient/Observation.rs openid launch/patient offline_access");
        assert!(s.launch && s.launch_patient && s.openid && s.fhir_user && s.offline_access);
        assert_eq!(s.to_string(), "patient/Observation.rs launch launch/patient openid fhirUser offline_access");
        assert_eq!(s.to_string().parse::<ScopeSet>().unwrap(), s, "the stored form parses back");
        let g = s.intersect(&set("patient/*.rs launch openid"));
        assert_eq!(g.to_string(), "patient/Observation.rs launch openid");
        assert!(!set("openid").within(&set("user/*.rs")));
        assert!(set("launch").within(&set("launch openid")));
    }

    #[test]
    fn auth6_granted_scopes_are_requested_intersect_registered() {
        let reg = set("user/*.rs user/Observation.cruds offline_access");
        let g = set("user/*.cruds user/Patient.r online_access").intersect(&reg);
        assert_eq!(g.to_string(), "user/*.rs user/Observation.cruds user/Patient.r");
        assert!(!g.offline_access && !g.online_access);
        assert_eq!(g.perms_for("Observation"), Perms::ALL);
        assert_eq!(g.perms_for("Patient").letters(), "rs");
        assert!(set("user/Patient.rs").intersect(&set("system/*.rs")).clinical.is_empty());
        assert!(set("user/Patient.r").within(&set("user/*.rs")));
        assert!(!set("user/Patient.c").within(&set("user/*.rs")));
    }

    #[test]
    fn auth6_viewable_types() {
        assert_eq!(set("user/Patient.rs user/Observation.c").viewable_types(), Some(vec!["Patient".to_string()]));
        assert_eq!(set("user/*.s").viewable_types(), None);
        assert_eq!(set("user/*.c").viewable_types(), Some(vec![]));
    }
}
