//! The policy decision point (ACL-1..3, ACL-5): deny by default, one function decides every
//! request from the job type, the information category of the data, the operation, the network
//! zone and the declared purpose of use.
//!
//! The policy is data: zones (address ranges, client certificate), information categories (rules
//! on resource type, `meta.security` labels and codes) and grants, loaded from `[policy]` in the
//! configuration over a built-in default (`default-policy.toml`) and validated before the server
//! starts. Names are parsed once into small indices, so a decision is a few bit operations and
//! allocates nothing: it runs once per request, and the store applies its result per resource.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::{Principal, Role};

/// What a request wants to do (ACL-2 operations, and the non-clinical ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    View,
    Create,
    Update,
    /// Confirming (確定) an entry. No HTTP interaction uses it yet.
    Confirm,
    Delete,
    /// Exporting data in bulk. No HTTP interaction uses it yet.
    Export,
    /// Reading the server's CapabilityStatement: no record content.
    Capabilities,
    /// Reading the audit trail's review views (AUD-4).
    AuditReview,
    /// Reading the server's operational status (clock, audit coverage): no record content.
    ViewStatus,
    /// Reading the account review report and the role-request queue (AUTH-7).
    AccountReview,
    /// Disabling and enabling accounts (AUTH-7).
    AccountManage,
}

impl Operation {
    /// The operations on clinical data that grants name, in bit order.
    pub const CLINICAL: [Operation; 6] = [
        Operation::View,
        Operation::Create,
        Operation::Update,
        Operation::Confirm,
        Operation::Delete,
        Operation::Export,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::View => "view",
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Confirm => "confirm",
            Operation::Delete => "delete",
            Operation::Export => "export",
            Operation::Capabilities => "capabilities",
            Operation::AuditReview => "audit-review",
            Operation::ViewStatus => "view-status",
            Operation::AccountReview => "account-review",
            Operation::AccountManage => "account-manage",
        }
    }

    /// Bit position among [`Operation::CLINICAL`].
    fn clinical_index(self) -> Option<usize> {
        Operation::CLINICAL.iter().position(|o| *o == self)
    }
}

/// The declared purpose of use of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// The default.
    Treatment,
    Payment,
    Operations,
    /// Break-glass: requires a stated reason; flagged in the audit trail.
    Emergency,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [Purpose::Treatment, Purpose::Payment, Purpose::Operations, Purpose::Emergency];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Treatment => "treatment",
            Purpose::Payment => "payment",
            Purpose::Operations => "operations",
            Purpose::Emergency => "emergency",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Purpose {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            PolicyError(format!("unknown purpose '{}': expected treatment, payment, operations or emergency", clip(s)))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Permit,
    Deny,
}

/// A configuration the policy refuses, with a message naming the offending entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("access policy: {0}")]
pub struct PolicyError(pub String);

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// A zone of the policy, by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ZoneId(u8);

/// A set of information categories, by position in the policy (at most 64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CategorySet(u64);

impl CategorySet {
    pub const EMPTY: CategorySet = CategorySet(0);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains_all(self, other: CategorySet) -> bool {
        other.0 & !self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.0 & (1u64 << i) != 0)
    }
}

/// An address range `a.b.c.d/n` or `x::/n` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    net: u128,
    len: u8,
    v4: bool,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, PolicyError> {
        let bad = || PolicyError(format!("'{}' is not an address range such as 10.0.0.0/8 or fd00::/8", clip(s)));
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let (bits, v4, max) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), true, 32u8),
            IpAddr::V6(a) => (u128::from(a), false, 128u8),
        };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(bad());
        }
        let mask = Self::mask(len, max);
        if bits & !mask != 0 {
            return Err(PolicyError(format!("'{}' has host bits set beyond its prefix length", clip(s))));
        }
        Ok(Cidr { net: bits, len, v4 })
    }

    fn mask(len: u8, max: u8) -> u128 {
        if len == 0 {
            0
        } else {
            let all: u128 = if max == 32 { u128::from(u32::MAX) } else { u128::MAX };
            all & !((1u128 << (max - len)) - 1) & all
        }
    }

    fn max(&self) -> u8 {
        if self.v4 { 32 } else { 128 }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (bits, v4) = match ip.to_canonical() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), true),
            IpAddr::V6(a) => (u128::from(a), false),
        };
        v4 == self.v4 && bits & Self::mask(self.len, self.max()) == self.net
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        if self.v4 != other.v4 {
            return false;
        }
        let len = self.len.min(other.len);
        let m = Self::mask(len, self.max());
        self.net & m == other.net & m
    }
}

#[derive(Clone, Debug)]
struct ZoneDef {
    name: String,
    addresses: Vec<Cidr>,
    client_certificate: bool,
    /// SHA-256 fingerprints of the CA certificates (in the client-CA bundle) that must have
    /// issued the client certificate; empty: any verified certificate.
    issuers: Vec<[u8; 32]>,
    /// Local addresses (listeners) whose connections belong to this zone.
    listeners: Vec<std::net::SocketAddr>,
}

#[derive(Clone, Debug)]
struct CategoryDef {
    name: String,
    resource_types: Vec<String>,
    /// (system, code) of `meta.security` labels.
    security: Vec<(String, String)>,
    /// (system, code prefix) of `code.coding`.
    codes: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug)]
struct Grant {
    ops: u8,
    categories: u64,
    zones: u64,
    purposes: u8,
}

/// The validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    zones: Vec<ZoneDef>,
    default_zone: ZoneId,
    categories: Vec<CategoryDef>,
    default_category: usize,
    /// One grant list per job type, indexed by [`Role::index`].
    grants: Vec<Vec<Grant>>,
    /// Zones (bits) from which the administration operations (audit review, status, account
    /// review and management) may be used at all.
    administration_zones: u64,
    /// What patients may do in their own compartment (ACL-4): bits of [`Operation::CLINICAL`]
    /// and the categories they may not see.
    patient_ops: u8,
    patient_hidden: u64,
}

// ---- configuration (TOML) ----

/// `[policy]` in mamori.toml: each key present replaces the built-in default's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub default_zone: Option<String>,
    pub default_category: Option<String>,
    pub zone: Option<Vec<ZoneConfig>>,
    pub category: Option<Vec<CategoryConfig>>,
    pub grant: Option<Vec<GrantConfig>>,
    /// Zones from which administrators and auditors may work (audit review, status, account
    /// review and management).
    pub administration_zones: Option<Vec<String>>,
    /// `[policy.patient]`: what patients may do at the patient interface (ACL-4).
    pub patient: Option<PatientConfig>,
}

/// `[policy.patient]`: patients see only their own compartment; within it, these operations on
/// every category except the hidden ones.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientConfig {
    /// Clinical operations patients may perform in their own compartment (default: view only).
    #[serde(default = "default_patient_operations")]
    pub operations: Vec<String>,
    /// Categories patients do not see even in their own compartment (e.g. psychiatric notes
    /// pending a clinician's release).
    #[serde(default)]
    pub hidden_categories: Vec<String>,
}

fn default_patient_operations() -> Vec<String> {
    vec!["view".into()]
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The zone requires a client certificate verified against `tls.client_ca`.
    #[serde(default)]
    pub client_certificate: bool,
    /// The zone requires a client certificate issued by one of these CAs: SHA-256
    /// fingerprints (hex, `:` allowed) of CA certificates in the client-CA bundle (ACL-3).
    #[serde(default)]
    pub client_issuers: Vec<String>,
    /// Listener addresses (`ip:port`, as in `server.listen` or `patient_portal.listen`) bound
    /// to this zone: every connection accepted there is in it.
    #[serde(default)]
    pub listeners: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    pub name: String,
    #[serde(default)]
    pub resource_types: Vec<String>,
    #[serde(default)]
    pub security: Vec<String>,
    #[serde(default)]
    pub codes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub jobs: Vec<String>,
    pub operations: Vec<String>,
    pub categories: Vec<String>,
    pub zones: Vec<String>,
    #[serde(default = "default_purposes")]
    pub purposes: Vec<String>,
}

fn default_purposes() -> Vec<String> {
    vec!["treatment".into()]
}

const DEFAULT_POLICY: &str = include_str!("default-policy.toml");

impl PolicyConfig {
    /// The built-in default, as shipped in `default-policy.toml`.
    pub fn builtin() -> PolicyConfig {
        // The file is part of the crate and its parse is unit-tested; a failure here is a build
        // defect, so fall back to an empty (deny-everything) configuration rather than panic.
        toml::from_str(DEFAULT_POLICY).unwrap_or_default()
    }

    /// This configuration over the built-in default.
    pub fn over_builtin(&self) -> PolicyConfig {
        let base = PolicyConfig::builtin();
        PolicyConfig {
            default_zone: self.default_zone.clone().or(base.default_zone),
            default_category: self.default_category.clone().or(base.default_category),
            zone: self.zone.clone().or(base.zone),
            category: self.category.clone().or(base.category),
            grant: self.grant.clone().or(base.grant),
            administration_zones: self.administration_zones.clone().or(base.administration_zones),
            patient: self.patient.clone().or(base.patient),
        }
    }
}

fn split_pair(s: &str, what: &str) -> Result<(String, String), PolicyError> {
    match s.split_once('|') {
        Some((sys, code)) if !sys.is_empty() && !code.is_empty() => Ok((sys.to_string(), code.to_string())),
        _ => Err(PolicyError(format!("{what} '{}' must be written system|code", clip(s)))),
    }
}

impl Policy {
    /// The built-in default policy.
    pub fn builtin() -> Result<Policy, PolicyError> {
        Policy::from_config(&PolicyConfig::default())
    }

    /// Validates `cfg` (over the built-in default) into a policy; any unknown name, empty
    /// grant, overlapping zone or grant contradicting ACL-5 is refused.
    pub fn from_config(cfg: &PolicyConfig) -> Result<Policy, PolicyError> {
        let cfg = cfg.over_builtin();
        let zones_cfg = cfg.zone.unwrap_or_default();
        let cats_cfg = cfg.category.unwrap_or_default();
        if zones_cfg.is_empty() || zones_cfg.len() > 64 {
            return Err(PolicyError("define between 1 and 64 zones".into()));
        }
        if cats_cfg.is_empty() || cats_cfg.len() > 64 {
            return Err(PolicyError("define between 1 and 64 categories".into()));
        }
        let mut zones: Vec<ZoneDef> = Vec::new();
        for z in &zones_cfg {
            check_name(&z.name, "zone")?;
            if zones.iter().any(|d| d.name == z.name) {
                return Err(PolicyError(format!("zone '{}' is defined twice", z.name)));
            }
            let addresses = z.addresses.iter().map(|a| Cidr::parse(a)).collect::<Result<Vec<_>, _>>()?;
            let issuers = z
                .client_issuers
                .iter()
                .map(|f| parse_fingerprint(f).map_err(|m| PolicyError(format!("zone '{}': {m}", z.name))))
                .collect::<Result<Vec<_>, _>>()?;
            if !issuers.is_empty() && !z.client_certificate {
                return Err(PolicyError(format!("zone '{}': client_issuers needs client_certificate = true", z.name)));
            }
            let mut listeners = Vec::new();
            for l in &z.listeners {
                let a: std::net::SocketAddr = l.trim().parse().map_err(|_| {
                    PolicyError(format!(
                        "zone '{}': listener '{}' is not an address such as 10.0.0.5:8443",
                        z.name,
                        clip(l)
                    ))
                })?;
                if zones.iter().any(|d| d.listeners.contains(&a)) {
                    return Err(PolicyError(format!("listener {a} is bound to two zones")));
                }
                listeners.push(a);
            }
            for other in &zones {
                if other.client_certificate != z.client_certificate || other.issuers != issuers {
                    continue;
                }
                for a in &addresses {
                    if other.addresses.iter().any(|b| a.overlaps(b)) {
                        return Err(PolicyError(format!(
                            "zones '{}' and '{}' have overlapping address ranges: a source must belong to one zone",
                            other.name, z.name
                        )));
                    }
                }
            }
            zones.push(ZoneDef {
                name: z.name.clone(),
                addresses,
                client_certificate: z.client_certificate,
                issuers,
                listeners,
            });
        }
        let mut categories: Vec<CategoryDef> = Vec::new();
        for c in &cats_cfg {
            check_name(&c.name, "category")?;
            if categories.iter().any(|d| d.name == c.name) {
                return Err(PolicyError(format!("category '{}' is defined twice", c.name)));
            }
            for t in &c.resource_types {
                if mamori_fhir::resource_type::ResourceType::from_str(t).is_err() {
                    return Err(PolicyError(format!("category '{}': unknown resource type '{}'", c.name, clip(t))));
                }
            }
            let security = c.security.iter().map(|s| split_pair(s, "security label")).collect::<Result<_, _>>()?;
            let codes = c
                .codes
                .iter()
                .map(|s| {
                    let (sys, code) = split_pair(s, "code")?;
                    Ok((sys, code.strip_suffix('*').unwrap_or(&code).to_string()))
                })
                .collect::<Result<Vec<_>, PolicyError>>()?;
            if codes.iter().any(|(_, p)| p.is_empty()) {
                return Err(PolicyError(format!("category '{}': a code prefix must not be empty", c.name)));
            }
            categories.push(CategoryDef {
                name: c.name.clone(),
                resource_types: c.resource_types.clone(),
                security,
                codes,
            });
        }
        let zone_idx = |n: &str| {
            zones.iter().position(|z| z.name == n).ok_or_else(|| PolicyError(format!("unknown zone '{}'", clip(n))))
        };
        let cat_idx = |n: &str| {
            categories
                .iter()
                .position(|c| c.name == n)
                .ok_or_else(|| PolicyError(format!("unknown category '{}'", clip(n))))
        };
        let default_zone = ZoneId(zone_idx(cfg.default_zone.as_deref().unwrap_or("internet"))? as u8);
        let default_category = cat_idx(cfg.default_category.as_deref().unwrap_or("general"))?;
        let dc = &categories[default_category];
        if !dc.resource_types.is_empty() || !dc.security.is_empty() || !dc.codes.is_empty() {
            return Err(PolicyError(format!(
                "the default category '{}' takes what no rule matches; it cannot have rules itself",
                dc.name
            )));
        }
        let mut grants: Vec<Vec<Grant>> = vec![Vec::new(); Role::ALL.len()];
        for (i, g) in cfg.grant.unwrap_or_default().iter().enumerate() {
            let at = |m: String| PolicyError(format!("grant {}: {m}", i + 1));
            if g.jobs.is_empty() || g.operations.is_empty() || g.categories.is_empty() || g.zones.is_empty() {
                return Err(at("jobs, operations, categories and zones must each name at least one".into()));
            }
            if g.purposes.is_empty() {
                return Err(at("purposes must name at least one".into()));
            }
            let mut ops = 0u8;
            for o in &g.operations {
                let op = Operation::CLINICAL
                    .into_iter()
                    .find(|x| x.as_str() == o)
                    .ok_or_else(|| at(format!("unknown operation '{}'", clip(o))))?;
                ops |= 1 << op.clinical_index().unwrap_or(0);
            }
            let mut cats = 0u64;
            for c in &g.categories {
                cats |= 1 << cat_idx(c).map_err(|e| at(e.0))?;
            }
            let mut zs = 0u64;
            for z in &g.zones {
                zs |= 1 << zone_idx(z).map_err(|e| at(e.0))?;
            }
            let mut purposes = 0u8;
            for p in &g.purposes {
                purposes |= p.parse::<Purpose>().map_err(|e| at(e.0))?.bit();
            }
            for j in &g.jobs {
                let role: Role = j.parse().map_err(|e: crate::RoleError| at(e.to_string()))?;
                if role == Role::Patient {
                    return Err(at(
                        "patients get no grants: what they may do in their own compartment is [policy.patient] (ACL-4)"
                            .into(),
                    ));
                }
                if matches!(role, Role::Administrator | Role::Auditor) {
                    return Err(at(format!(
                        "{role}s get no clinical data by virtue of their job (ACL-5); give the person a \
                         second, clinical account instead"
                    )));
                }
                grants[role.index()].push(Grant { ops, categories: cats, zones: zs, purposes });
            }
        }
        let admin_cfg = cfg.administration_zones.unwrap_or_default();
        if admin_cfg.is_empty() {
            return Err(PolicyError(
                "administration_zones must name at least one zone, or no one could manage accounts".into(),
            ));
        }
        let mut administration_zones = 0u64;
        for z in &admin_cfg {
            administration_zones |=
                1 << zone_idx(z).map_err(|e| PolicyError(format!("administration_zones: {}", e.0)))?;
        }
        let patient_cfg = cfg.patient.unwrap_or_else(|| PatientConfig {
            operations: default_patient_operations(),
            hidden_categories: Vec::new(),
        });
        let mut patient_ops = 0u8;
        for o in &patient_cfg.operations {
            let op = [Operation::View, Operation::Create, Operation::Update, Operation::Delete]
                .into_iter()
                .find(|x| x.as_str() == o)
                .ok_or_else(|| {
                    PolicyError(format!("patient.operations: '{}' is not one of view, create, update, delete", clip(o)))
                })?;
            patient_ops |= 1 << op.clinical_index().unwrap_or(0);
        }
        if patient_ops & 1 == 0 {
            return Err(PolicyError("patient.operations must include view".into()));
        }
        let mut patient_hidden = 0u64;
        for c in &patient_cfg.hidden_categories {
            patient_hidden |=
                1 << cat_idx(c).map_err(|e| PolicyError(format!("patient.hidden_categories: {}", e.0)))?;
        }
        Ok(Policy {
            zones,
            default_zone,
            categories,
            default_category,
            grants,
            administration_zones,
            patient_ops,
            patient_hidden,
        })
    }

    // ---- the decision ----

    /// The categories on which `role` may perform `op` from `zone` for `purpose`: the one place
    /// grants are read. Allocation-free.
    pub fn allowed(&self, role: Role, op: Operation, zone: ZoneId, purpose: Purpose) -> CategorySet {
        let Some(bit) = op.clinical_index() else { return CategorySet::EMPTY };
        let Some(list) = self.grants.get(role.index()) else { return CategorySet::EMPTY };
        let mut out = 0u64;
        for g in list {
            if g.ops & (1 << bit) != 0 && g.zones & (1u64 << zone.0) != 0 && g.purposes & purpose.bit() != 0 {
                out |= g.categories;
            }
        }
        CategorySet(out)
    }

    /// Decides one request on data of the categories `data` (every one must be permitted).
    /// Anything not explicitly permitted is denied.
    pub fn decide(
        &self,
        who: &Principal,
        op: Operation,
        data: CategorySet,
        zone: ZoneId,
        purpose: Purpose,
    ) -> Decision {
        let admin_zone = self.administration_zones & (1u64 << zone.0) != 0;
        let permit = match (who.role, op) {
            (_, Operation::Capabilities) => true,
            // ACL-5: auditors read audit trails, and only they do.
            (role, Operation::AuditReview) => admin_zone && role == Role::Auditor,
            (role, Operation::ViewStatus | Operation::AccountReview) => {
                admin_zone && matches!(role, Role::Administrator | Role::Auditor)
            }
            // AUTH-7: disabling is immediate and administrators do it; auditors only look.
            (role, Operation::AccountManage) => admin_zone && role == Role::Administrator,
            // ACL-4: patients reach clinical data only through their compartment's rights
            // ([`Policy::patient_rights`]), never through grants.
            (Role::Patient, _) => false,
            // ACL-5: administrators and auditors get no clinical data by virtue of their role
            // (validation refuses grants to them; this holds even if it did not).
            (Role::Administrator | Role::Auditor, _) => false,
            (role, op) => {
                let allowed = self.allowed(role, op, zone, purpose);
                !data.is_empty() && allowed.contains_all(data)
            }
        };
        if permit { Decision::Permit } else { Decision::Deny }
    }

    /// The per-request rights of `who`: computed once in the request path, applied by the store
    /// to every resource it would disclose or change.
    pub fn rights(self: &Arc<Self>, who: &Principal, zone: ZoneId, purpose: Purpose) -> Rights {
        let mut allowed = [CategorySet::EMPTY; 6];
        // ACL-5 as in `decide`: no clinical rights for administrators and auditors, whatever
        // the grants say. For everyone else `decide(c)` permits exactly the categories
        // `allowed()` returns (a unit test checks the two agree for every input).
        if !matches!(who.role, Role::Administrator | Role::Auditor | Role::Patient) {
            for (i, op) in Operation::CLINICAL.into_iter().enumerate() {
                allowed[i] = self.allowed(who.role, op, zone, purpose);
            }
        }
        Rights { allowed, policy: Some(Arc::clone(self)), compartment: None, scope: None }
    }

    /// The rights of a patient at the patient interface (ACL-4): the operations of
    /// `[policy.patient]` on every category but its hidden ones, confined to the compartment of
    /// the Patient `patient_id`. The store applies the confinement to every read path.
    pub fn patient_rights(self: &Arc<Self>, patient_id: &str) -> Rights {
        let all = if self.categories.len() >= 64 { u64::MAX } else { (1u64 << self.categories.len()) - 1 };
        let visible = CategorySet(all & !self.patient_hidden);
        let mut allowed = [CategorySet::EMPTY; 6];
        for (i, slot) in allowed.iter_mut().enumerate() {
            if self.patient_ops & (1 << i) != 0 {
                *slot = visible;
            }
        }
        Rights { allowed, policy: Some(Arc::clone(self)), compartment: Some(Arc::from(patient_id)), scope: None }
    }

    // ---- zones ----

    /// The zone of a request from `remote`, with or without a verified client certificate.
    pub fn zone_of(&self, remote: IpAddr, client_certificate: bool) -> ZoneId {
        let cert = if client_certificate { ClientCert::Verified { issuer: None } } else { ClientCert::None };
        self.zone_of_connection(remote, None, cert)
    }

    /// The zone of a connection (ACL-3): zones requiring a certificate from a given issuer
    /// first, then zones requiring any verified certificate, then the zone the listener
    /// (`local`) is bound to, then zones by source address, else the default zone.
    pub fn zone_of_connection(&self, remote: IpAddr, local: Option<std::net::SocketAddr>, cert: ClientCert) -> ZoneId {
        if let ClientCert::Verified { issuer: Some(fp) } = cert {
            for (i, z) in self.zones.iter().enumerate() {
                let addr_ok = z.addresses.is_empty() || z.addresses.iter().any(|a| a.contains(remote));
                if z.issuers.contains(&fp) && addr_ok {
                    return ZoneId(i as u8);
                }
            }
        }
        let client_certificate = matches!(cert, ClientCert::Verified { .. });
        // Zones requiring a certificate come first: they are the more specific rule.
        for want_cert in [true, false] {
            if want_cert && !client_certificate {
                continue;
            }
            if !want_cert
                && let Some(l) = local
                && let Some(i) = self.zones.iter().position(|z| z.listeners.contains(&l))
            {
                return ZoneId(i as u8);
            }
            for (i, z) in self.zones.iter().enumerate() {
                if z.client_certificate != want_cert || !z.issuers.is_empty() {
                    continue;
                }
                let addr_ok = if z.addresses.is_empty() {
                    z.client_certificate
                } else {
                    z.addresses.iter().any(|a| a.contains(remote))
                };
                if addr_ok {
                    return ZoneId(i as u8);
                }
            }
        }
        self.default_zone
    }

    pub fn zone_name(&self, z: ZoneId) -> &str {
        self.zones.get(usize::from(z.0)).map(|d| d.name.as_str()).unwrap_or("?")
    }

    pub fn zone_named(&self, name: &str) -> Option<ZoneId> {
        self.zones.iter().position(|z| z.name == name).map(|i| ZoneId(i as u8))
    }

    pub fn zone_names(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.name.as_str())
    }

    /// The zones from which `role` may do anything at all: where its grants apply, and for
    /// administrators and auditors the administration zones. Shown in the account review report
    /// (AUTH-7) so a reviewer sees who may work from where.
    pub fn zones_of(&self, role: Role) -> Vec<String> {
        let mut bits = match role {
            Role::Administrator | Role::Auditor => self.administration_zones,
            _ => 0,
        };
        for g in self.grants.get(role.index()).into_iter().flatten() {
            bits |= g.zones;
        }
        self.zones.iter().enumerate().filter(|(i, _)| bits & (1u64 << i) != 0).map(|(_, z)| z.name.clone()).collect()
    }

    /// Every CA fingerprint a zone names, with the zone's name (checked at start-up against the
    /// configured client-CA bundle).
    pub fn client_issuers(&self) -> impl Iterator<Item = (&str, &[u8; 32])> {
        self.zones.iter().flat_map(|z| z.issuers.iter().map(move |f| (z.name.as_str(), f)))
    }

    /// Every listener address a zone is bound to, with the zone's name.
    pub fn zone_listeners(&self) -> impl Iterator<Item = (&str, std::net::SocketAddr)> {
        self.zones.iter().flat_map(|z| z.listeners.iter().map(move |l| (z.name.as_str(), *l)))
    }

    // ---- categories ----

    pub fn category_names(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().map(|c| c.name.as_str())
    }

    pub fn category_name(&self, i: usize) -> &str {
        self.categories.get(i).map(|c| c.name.as_str()).unwrap_or("?")
    }

    pub fn category_named(&self, name: &str) -> Option<CategorySet> {
        self.categories.iter().position(|c| c.name == name).map(|i| CategorySet(1 << i))
    }

    /// The categories of one resource: every category whose rule matches, else the default.
    pub fn categorise(&self, rtype: &str, body: &Value) -> CategorySet {
        let security = body.get("meta").and_then(|m| m.get("security")).and_then(Value::as_array);
        let codings = body.get("code").and_then(|c| c.get("coding")).and_then(Value::as_array);
        fn pair(v: &Value) -> (&str, &str) {
            (v.get("system").and_then(Value::as_str).unwrap_or(""), v.get("code").and_then(Value::as_str).unwrap_or(""))
        }
        let mut out = 0u64;
        for (i, c) in self.categories.iter().enumerate() {
            let by_type = c.resource_types.iter().any(|t| t == rtype);
            let by_label = security.is_some_and(|labels| {
                labels.iter().map(pair).any(|(s, k)| c.security.iter().any(|(cs, ck)| cs == s && ck == k))
            });
            let by_code = codings.is_some_and(|codes| {
                codes.iter().map(pair).any(|(s, k)| c.codes.iter().any(|(cs, p)| cs == s && k.starts_with(p.as_str())))
            });
            if by_type || by_label || by_code {
                out |= 1 << i;
            }
        }
        if out == 0 {
            out = 1 << self.default_category;
        }
        CategorySet(out)
    }

    /// A fingerprint of the categorisation rules: the store recomputes stored categories when it
    /// changes.
    pub fn category_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(format!("{:?}|{}", self.categories, self.default_category).as_bytes());
        h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

fn check_name(n: &str, what: &str) -> Result<(), PolicyError> {
    let ok = !n.is_empty()
        && n.len() <= 40
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(PolicyError(format!("{what} name '{}' must be lowercase a-z, 0-9, - or _", clip(n)))) }
}

/// What one request may do with clinical data, per clinical operation: the categories allowed.
/// Computed once per request by [`Policy::rights`]; the store applies it to every resource.
#[derive(Clone)]
pub struct Rights {
    allowed: [CategorySet; 6],
    /// `None`: unrestricted (the local operator, who holds the data directory anyway).
    policy: Option<Arc<Policy>>,
    /// ACL-4: confined to the compartment of this Patient (a patient's own requests); resources
    /// outside it do not exist for the request.
    compartment: Option<Arc<str>>,
    /// The SMART scopes of an OAuth access token (AUTH-6): they narrow the rights to resource
    /// types × interactions; `None` for API tokens and sessions (no narrowing).
    scope: Option<Arc<crate::scope::ScopeSet>>,
}

impl fmt::Debug for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.policy {
            None => f.write_str("Rights(unrestricted)"),
            Some(_) => write!(
                f,
                "Rights(view hides {:?}, compartment {:?}, scope {:?})",
                self.hidden_names(),
                self.compartment,
                self.scope
            ),
        }
    }
}

impl Rights {
    /// No restriction: operator commands run by whoever holds the data directory and its key.
    pub fn unrestricted() -> Rights {
        Rights { allowed: [CategorySet(u64::MAX); 6], policy: None, compartment: None, scope: None }
    }

    /// Nothing at all (unauthenticated requests).
    pub fn none() -> Rights {
        Rights {
            allowed: [CategorySet::EMPTY; 6],
            policy: Some(Arc::new(Policy::deny_all())),
            compartment: None,
            scope: None,
        }
    }

    /// The Patient whose compartment the request is confined to (ACL-4), if any.
    pub fn compartment(&self) -> Option<&str> {
        self.compartment.as_deref()
    }

    /// These rights narrowed by SMART scopes: only the resource types × interactions the scopes
    /// name remain; nothing the policy denies becomes allowed (AUTH-6).
    pub fn narrowed(mut self, scope: Arc<crate::scope::ScopeSet>) -> Rights {
        self.scope = Some(scope);
        self
    }

    /// These rights confined to the compartment of the Patient `patient_id` (AUTH-6: a staff
    /// app's EHR launch context): resources outside it do not exist for the request; nothing the
    /// rights deny becomes allowed. Rights already confined to another Patient allow nothing.
    pub fn confined_to(mut self, patient_id: &str) -> Rights {
        if self.compartment.as_deref().is_some_and(|p| p != patient_id) {
            self.allowed = [CategorySet::EMPTY; 6];
        }
        self.compartment = Some(Arc::from(patient_id));
        self
    }

    /// Whether scopes narrow these rights (an OAuth access token).
    pub fn is_scoped(&self) -> bool {
        self.scope.is_some()
    }

    /// Whether the operation is allowed on at least one category (the request-level gate), and,
    /// under scopes, on at least one resource type.
    pub fn any(&self, op: Operation) -> bool {
        op.clinical_index().is_some_and(|i| !self.allowed[i].is_empty())
            && self.scope.as_ref().is_none_or(|s| scope_bits(op) & s.perms_any().0 != 0)
    }

    /// Whether the scopes (if any) allow `op` on resources of `rtype`; the categories are
    /// checked separately ([`Rights::permits_names`]).
    pub fn permits_type(&self, op: Operation, rtype: &str) -> bool {
        self.scope.as_ref().is_none_or(|s| scope_bits(op) & s.perms_for(rtype).0 != 0)
    }

    /// Whether the scopes (if any) allow one SMART interaction, on `rtype` or (`None`) on some
    /// type.
    pub fn scope_permits(&self, i: crate::scope::Interaction, rtype: Option<&str>) -> bool {
        self.scope.as_ref().is_none_or(|s| match rtype {
            Some(t) => s.perms_for(t).has(i),
            None => s.perms_any().has(i),
        })
    }

    /// The resource types whose resources may be disclosed; `None`: every type (no scope, or a
    /// `*` scope that reads or searches).
    pub fn viewable_types(&self) -> Option<Vec<String>> {
        self.scope.as_ref().and_then(|s| s.viewable_types())
    }

    /// Categories (by name) the request may not view: resources in any of them are invisible.
    pub fn hidden_names(&self) -> Vec<String> {
        let Some(p) = &self.policy else { return Vec::new() };
        let view = self.allowed[0];
        p.category_names().enumerate().filter(|(i, _)| view.0 & (1 << i) == 0).map(|(_, n)| n.to_string()).collect()
    }

    /// Whether `op` is allowed on data carrying every one of the category `names`.
    pub fn permits_names<'a>(&self, op: Operation, names: impl IntoIterator<Item = &'a str>) -> bool {
        let Some(i) = op.clinical_index() else { return false };
        let Some(p) = &self.policy else { return true };
        let mut any = false;
        for n in names {
            any = true;
            match p.category_named(n) {
                Some(c) if self.allowed[i].contains_all(c) => {}
                // A category this policy does not know is not permitted (deny by default).
                _ => return false,
            }
        }
        any
    }
}

/// The SMART interactions that carry a clinical operation: viewing is read or search; confirming
/// is an update; export has no scope and is never allowed under scopes.
fn scope_bits(op: Operation) -> u8 {
    use crate::scope::Interaction as I;
    match op {
        Operation::View => I::Read.bit() | I::Search.bit(),
        Operation::Create => I::Create.bit(),
        Operation::Update | Operation::Confirm => I::Update.bit(),
        Operation::Delete => I::Delete.bit(),
        _ => 0,
    }
}

impl Policy {
    /// A policy that permits nothing (no zones, no categories, no grants).
    pub fn deny_all() -> Policy {
        Policy {
            zones: Vec::new(),
            default_zone: ZoneId(0),
            categories: Vec::new(),
            default_category: 0,
            grants: Vec::new(),
            administration_zones: 0,
            patient_ops: 0,
            patient_hidden: 0,
        }
    }
}

/// The client certificate of a connection, as zones see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCert {
    None,
    /// Verified against the client-CA bundle; `issuer`: SHA-256 of the CA certificate in the
    /// bundle that issued it, when known.
    Verified {
        issuer: Option<[u8; 32]>,
    },
}

/// A SHA-256 fingerprint written in hex, with or without `:` separators.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s.trim().chars().filter(|c| *c != ':').collect();
    let bad = || format!("'{}' is not a SHA-256 fingerprint (64 hex digits)", clip(s));
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(role: Role) -> Principal {
        Principal { account: "x".into(), role }
    }

    fn default() -> Arc<Policy> {
        Arc::new(Policy::builtin().expect("the built-in policy is valid"))
    }

    fn cat(pol: &Policy, n: &str) -> CategorySet {
        pol.category_named(n).expect("category")
    }

    fn zone(pol: &Policy, n: &str) -> ZoneId {
        pol.zone_named(n).expect("zone")
    }

    fn with(extra: &str) -> Result<Policy, PolicyError> {
        let cfg: PolicyConfig = toml::from_str(extra).map_err(|e| PolicyError(e.to_string()))?;
        Policy::from_config(&cfg)
    }

    #[test]
    fn acl1_builtin_policy_parses_and_validates() {
        let pol = default();
        assert_eq!(pol.zone_names().collect::<Vec<_>>(), ["his", "vpn", "internet"]);
        assert_eq!(
            pol.category_names().collect::<Vec<_>>(),
            ["general", "psychiatric", "infectious", "genetic", "billing", "administrative"]
        );
    }

    #[test]
    fn acl5_administrator_and_auditor_see_no_clinical_data() {
        let pol = default();
        for role in [Role::Administrator, Role::Auditor, Role::Maintenance] {
            for z in pol.zone_names().map(|n| zone(&pol, n)) {
                for purpose in Purpose::ALL {
                    for op in Operation::CLINICAL {
                        assert!(pol.allowed(role, op, z, purpose).is_empty(), "{role} {op:?}");
                        let all = CategorySet((1 << 6) - 1);
                        for c in all.iter() {
                            let d = pol.decide(&p(role), op, CategorySet(1 << c), z, purpose);
                            assert_eq!(d, Decision::Deny, "{role} {op:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn acl5_only_auditors_review_the_audit_trail() {
        let pol = default();
        let z = zone(&pol, "his");
        let d = |r| pol.decide(&p(r), Operation::AuditReview, CategorySet::EMPTY, z, Purpose::Treatment);
        assert_eq!(d(Role::Auditor), Decision::Permit);
        assert_eq!(d(Role::Physician), Decision::Deny);
        assert_eq!(d(Role::Administrator), Decision::Deny);
    }

    #[test]
    fn acl5_grants_to_administrators_or_auditors_refuse_start_up() {
        for job in ["administrator", "auditor"] {
            let err = with(&format!(
                "[[grant]]\njobs = [\"{job}\"]\noperations = [\"view\"]\ncategories = [\"general\"]\nzones = [\"his\"]\n"
            ))
            .unwrap_err();
            assert!(err.0.contains("ACL-5"), "{err}");
        }
    }

    #[test]
    fn acl2_physician_in_his_reads_and_writes_clinical_categories() {
        let pol = default();
        let his = zone(&pol, "his");
        for c in ["general", "psychiatric", "infectious", "genetic"] {
            for op in Operation::CLINICAL {
                assert_eq!(
                    pol.decide(&p(Role::Physician), op, cat(&pol, c), his, Purpose::Treatment),
                    Decision::Permit,
                    "{c} {op:?}"
                );
            }
        }
        assert_eq!(
            pol.decide(&p(Role::Physician), Operation::Delete, cat(&pol, "billing"), his, Purpose::Treatment),
            Decision::Deny
        );
        // A clerk handles billing, not clinical data.
        assert_eq!(
            pol.decide(&p(Role::Clerk), Operation::View, cat(&pol, "general"), his, Purpose::Treatment),
            Decision::Deny
        );
        assert_eq!(
            pol.decide(&p(Role::Clerk), Operation::Export, cat(&pol, "billing"), his, Purpose::Payment),
            Decision::Permit
        );
        // A resource in two categories needs both.
        let both = CategorySet(cat(&pol, "general").0 | cat(&pol, "billing").0);
        assert_eq!(pol.decide(&p(Role::Nurse), Operation::View, both, his, Purpose::Treatment), Decision::Deny);
    }

    #[test]
    fn acl3_internet_zone_hides_his_only_categories() {
        let pol = default();
        let internet = zone(&pol, "internet");
        let r = pol.rights(&p(Role::Physician), internet, Purpose::Treatment);
        assert_eq!(r.hidden_names(), ["psychiatric", "infectious", "genetic", "billing"]);
        let his = pol.rights(&p(Role::Physician), zone(&pol, "his"), Purpose::Treatment);
        assert!(his.hidden_names().is_empty());
        // Break-glass does not open the internet zone.
        let e = pol.rights(&p(Role::Physician), internet, Purpose::Emergency);
        assert_eq!(e.hidden_names().len(), 6);
    }

    #[test]
    fn acl3_zone_of_source_address() {
        let pol = with(
            "[[zone]]\nname = \"his\"\naddresses = [\"10.1.0.0/16\", \"127.0.0.1\"]\n\
             [[zone]]\nname = \"vpn\"\naddresses = [\"10.8.0.0/24\", \"fd00::/8\"]\n\
             [[zone]]\nname = \"internet\"\n",
        )
        .unwrap();
        let z = |a: &str| pol.zone_name(pol.zone_of(a.parse().unwrap(), false)).to_string();
        assert_eq!(z("10.1.2.3"), "his");
        assert_eq!(z("127.0.0.1"), "his");
        assert_eq!(z("::ffff:127.0.0.1"), "his", "IPv4-mapped addresses are matched as IPv4");
        assert_eq!(z("127.0.0.2"), "internet");
        assert_eq!(z("10.8.0.77"), "vpn");
        assert_eq!(z("fd12::1"), "vpn");
        assert_eq!(z("8.8.8.8"), "internet", "unknown sources fall to the default zone");
    }

    #[test]
    fn acl3_administration_zones_are_validated_and_decided() {
        let bad = |toml_src: &str| Policy::from_config(&toml::from_str(toml_src).unwrap()).unwrap_err().0;
        assert!(bad("administration_zones = []").contains("at least one zone"));
        assert!(bad("administration_zones = [\"mars\"]").contains("unknown zone 'mars'"));
        let policy = Policy::from_config(&toml::from_str("administration_zones = [\"his\"]").unwrap()).unwrap();
        let his = policy.zone_named("his").unwrap();
        let vpn = policy.zone_named("vpn").unwrap();
        let decide = |role, op, zone| policy.decide(&p(role), op, CategorySet::EMPTY, zone, Purpose::Treatment);
        assert_eq!(decide(Role::Administrator, Operation::AccountManage, his), Decision::Permit);
        assert_eq!(decide(Role::Administrator, Operation::AccountManage, vpn), Decision::Deny);
        assert_eq!(decide(Role::Auditor, Operation::AccountManage, his), Decision::Deny);
        assert_eq!(decide(Role::Auditor, Operation::AccountReview, his), Decision::Permit);
        assert_eq!(decide(Role::Physician, Operation::AccountReview, his), Decision::Deny);
        assert_eq!(decide(Role::Auditor, Operation::AuditReview, vpn), Decision::Deny);
        assert_eq!(policy.zones_of(Role::Auditor), ["his"]);
        assert_eq!(policy.zones_of(Role::Clerk), ["his"]);
    }

    #[test]
    fn acl3_client_certificate_zone() {
        let pol = with(
            "[[zone]]\nname = \"his\"\naddresses = [\"127.0.0.0/8\"]\n\
             [[zone]]\nname = \"vpn\"\nclient_certificate = true\n\
             [[zone]]\nname = \"internet\"\n",
        )
        .unwrap();
        assert_eq!(pol.zone_name(pol.zone_of("8.8.8.8".parse().unwrap(), true)), "vpn");
        assert_eq!(pol.zone_name(pol.zone_of("8.8.8.8".parse().unwrap(), false)), "internet");
    }

    #[test]
    fn acl3_zone_by_issuer_then_listener_then_address() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let pol = with(&format!(
            "[[zone]]\nname = \"his\"\nclient_certificate = true\nclient_issuers = [\"{a}\"]\n\
             [[zone]]\nname = \"vpn\"\nclient_certificate = true\nclient_issuers = [\"{b}\"]\n\
             listeners = [\"127.0.0.1:9443\"]\n\
             [[zone]]\nname = \"internet\"\naddresses = [\"127.0.0.0/8\"]\n"
        ))
        .unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let z = |local: Option<&str>, cert: ClientCert| {
            pol.zone_name(pol.zone_of_connection(ip, local.map(|l| l.parse().unwrap()), cert)).to_string()
        };
        let fa = parse_fingerprint(&a).unwrap();
        let fb = parse_fingerprint(&b).unwrap();
        assert_eq!(z(None, ClientCert::Verified { issuer: Some(fa) }), "his");
        assert_eq!(z(None, ClientCert::Verified { issuer: Some(fb) }), "vpn");
        assert_eq!(z(None, ClientCert::Verified { issuer: None }), "internet", "an unknown issuer opens nothing");
        assert_eq!(z(None, ClientCert::None), "internet");
        assert_eq!(z(Some("127.0.0.1:9443"), ClientCert::None), "vpn", "the listener's zone");
        assert_eq!(z(Some("127.0.0.1:8443"), ClientCert::None), "internet");
        assert!(parse_fingerprint("12:34").is_err());
        assert_eq!(parse_fingerprint("AB:".repeat(32).trim_end_matches(':')), Ok([0xab; 32]));
    }

    #[test]
    fn auth6_launch_confinement_narrows_staff_rights_and_never_widens_them() {
        let pol = default();
        let his = zone(&pol, "his");
        let dr = pol.rights(&p(Role::Physician), his, Purpose::Treatment);
        let hidden = dr.hidden_names();
        let r = dr.confined_to("p1");
        assert_eq!(r.compartment(), Some("p1"));
        assert!(r.any(Operation::View) && r.any(Operation::Create));
        assert_eq!(r.hidden_names(), hidden, "confinement hides no less than the policy");
        // A pharmacist confined to a patient still may not see psychiatric data.
        let ph = pol.rights(&p(Role::Pharmacist), his, Purpose::Treatment).confined_to("p1");
        assert!(ph.hidden_names().contains(&"psychiatric".to_string()));
        assert!(!ph.permits_names(Operation::View, ["psychiatric"]));
        // Confining rights already confined to another patient leaves nothing.
        let other = pol.patient_rights("p2").confined_to("p1");
        assert!(!other.any(Operation::View));
        // An administrator confined to a patient gets no clinical rights.
        assert!(!pol.rights(&p(Role::Administrator), his, Purpose::Treatment).confined_to("p1").any(Operation::View));
    }

    #[test]
    fn acl4_patient_rights_are_confined_and_read_only_by_default() {
        let pol = default();
        let r = pol.patient_rights("p1");
        assert_eq!(r.compartment(), Some("p1"));
        assert!(r.any(Operation::View));
        for op in [Operation::Create, Operation::Update, Operation::Delete, Operation::Export] {
            assert!(!r.any(op), "{op:?}");
        }
        assert_eq!(r.hidden_names(), ["psychiatric"]);
        // No staff path gives a patient anything.
        let who = p(Role::Patient);
        let his = zone(&pol, "his");
        assert!(!pol.rights(&who, his, Purpose::Treatment).any(Operation::View));
        assert_eq!(pol.decide(&who, Operation::View, cat(&pol, "general"), his, Purpose::Treatment), Decision::Deny);
        assert!(pol.rights(&p(Role::Physician), his, Purpose::Treatment).compartment().is_none());
        // Configurable: writes allowed, nothing withheld.
        let open = Arc::new(with("[patient]\noperations = [\"view\", \"create\"]\nhidden_categories = []\n").unwrap());
        let r = open.patient_rights("p1");
        assert!(r.any(Operation::Create) && r.hidden_names().is_empty());
    }

    #[test]
    fn acl1_contradictory_or_unknown_policy_is_refused() {
        let cases = [
            (
                "[[zone]]\nname = \"his\"\naddresses = [\"10.0.0.0/8\"]\n[[zone]]\nname = \"vpn\"\naddresses = [\"10.8.0.0/16\"]\n[[zone]]\nname = \"internet\"\n",
                "overlapping",
            ),
            ("[[zone]]\nname = \"his\"\naddresses = [\"10.0.0.1/8\"]\n", "host bits"),
            ("[[zone]]\nname = \"his\"\n[[zone]]\nname = \"his\"\n", "twice"),
            ("default_zone = \"moon\"\n", "unknown zone"),
            (
                "[[grant]]\njobs = [\"physician\"]\noperations = [\"view\"]\ncategories = [\"secret\"]\nzones = [\"his\"]\n",
                "unknown category",
            ),
            (
                "[[grant]]\njobs = [\"surgeon\"]\noperations = [\"view\"]\ncategories = [\"general\"]\nzones = [\"his\"]\n",
                "unknown role",
            ),
            (
                "[[grant]]\njobs = [\"physician\"]\noperations = [\"peek\"]\ncategories = [\"general\"]\nzones = [\"his\"]\n",
                "unknown operation",
            ),
            (
                "[[grant]]\njobs = [\"physician\"]\noperations = []\ncategories = [\"general\"]\nzones = [\"his\"]\n",
                "at least one",
            ),
            (
                "[[grant]]\njobs = [\"physician\"]\noperations = [\"view\"]\ncategories = [\"general\"]\nzones = [\"his\"]\npurposes = [\"curiosity\"]\n",
                "unknown purpose",
            ),
            (
                "[[category]]\nname = \"general\"\n[[category]]\nname = \"x\"\nresource_types = [\"Patiently\"]\n",
                "unknown resource type",
            ),
            ("[[category]]\nname = \"general\"\nresource_types = [\"Patient\"]\n", "cannot have rules"),
            ("[[category]]\nname = \"Psych\"\n", "lowercase"),
        ];
        for (text, needle) in cases {
            let err = with(text).expect_err(text);
            assert!(err.0.contains(needle), "{text}: {err}");
        }
        // Unknown keys are refused by the parser.
        assert!(toml::from_str::<PolicyConfig>("zones = []").is_err());
    }

    #[test]
    fn acl2_categories_from_type_labels_and_codes() {
        let pol = default();
        let names = |rtype: &str, body: serde_json::Value| {
            pol.categorise(rtype, &body).iter().map(|i| pol.category_name(i).to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names("Observation", json!({})), ["general"]);
        assert_eq!(names("Claim", json!({})), ["billing"]);
        assert_eq!(names("Patient", json!({})), ["administrative"]);
        let psy = json!({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}});
        assert_eq!(names("Condition", psy), ["psychiatric"]);
        let hiv = json!({"code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "B20.1"}]}});
        assert_eq!(names("Condition", hiv), ["infectious"]);
        let f = json!({"code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32"}]},
                       "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "GDIS"}]}});
        assert_eq!(names("Condition", f), ["psychiatric", "genetic"]);
    }

    #[test]
    fn acl1_rights_of_unknown_categories_are_denied() {
        let pol = default();
        let r = pol.rights(&p(Role::Physician), zone(&pol, "his"), Purpose::Treatment);
        assert!(r.permits_names(Operation::View, ["general", "psychiatric"]));
        assert!(!r.permits_names(Operation::View, ["no-such"]));
        assert!(!r.permits_names(Operation::View, []), "no category, no permit");
        assert!(Rights::unrestricted().permits_names(Operation::Delete, ["anything"]));
        assert!(!Rights::none().any(Operation::View));
    }

    #[test]
    fn acl1_rights_agree_with_decide_for_every_input() {
        let pol = default();
        for role in Role::ALL {
            let who = p(role);
            for z in pol.zone_names().map(|n| zone(&pol, n)) {
                for purpose in Purpose::ALL {
                    let rights = pol.rights(&who, z, purpose);
                    for op in Operation::CLINICAL {
                        for name in pol.category_names() {
                            let d = pol.decide(&who, op, cat(&pol, name), z, purpose) == Decision::Permit;
                            assert_eq!(rights.permits_names(op, [name]), d, "{role} {op:?} {name}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn auth6_scopes_narrow_and_never_widen() {
        let pol = default();
        let his = zone(&pol, "his");
        let all: Arc<crate::scope::ScopeSet> = Arc::new("user/*.cruds".parse().unwrap());
        // A clerk with every scope still has only the clerk's rights.
        let clerk = pol.rights(&p(Role::Clerk), his, Purpose::Treatment).narrowed(Arc::clone(&all));
        assert!(!clerk.permits_names(Operation::View, ["general"]));
        assert!(clerk.permits_names(Operation::View, ["administrative"]));
        // A physician limited to reading Patients.
        let only: Arc<crate::scope::ScopeSet> = Arc::new("user/Patient.rs".parse().unwrap());
        let dr = pol.rights(&p(Role::Physician), his, Purpose::Treatment).narrowed(only);
        assert!(dr.any(Operation::View));
        assert!(!dr.any(Operation::Create) && !dr.any(Operation::Update) && !dr.any(Operation::Delete));
        assert!(dr.permits_type(Operation::View, "Patient"));
        assert!(!dr.permits_type(Operation::View, "Observation"));
        assert_eq!(dr.viewable_types(), Some(vec!["Patient".to_string()]));
        assert!(!dr.any(Operation::Export), "export has no scope");
        // Administrators get nothing clinical with scopes either.
        let admin = pol.rights(&p(Role::Administrator), his, Purpose::Treatment).narrowed(all);
        assert!(!admin.any(Operation::View));
    }

    #[test]
    fn decision_is_cheap() {
        // Not a benchmark: a guard that decide() stays a handful of bit operations.
        let pol = default();
        let his = zone(&pol, "his");
        let who = p(Role::Nurse);
        let general = cat(&pol, "general");
        let mut permits = 0u32;
        for _ in 0..100_000 {
            if pol.decide(&who, Operation::View, general, his, Purpose::Treatment) == Decision::Permit {
                permits += 1;
            }
        }
        assert_eq!(permits, 100_000);
        // What the request path pays once per request: the rights and the hidden-category list
        // (printed, not asserted: timing on a shared machine is noise; see docs).
        let rounds = 10_000u32;
        let start = std::time::Instant::now();
        let mut hidden = 0usize;
        for _ in 0..rounds {
            hidden += pol.rights(&who, his, Purpose::Treatment).hidden_names().len();
        }
        let per = start.elapsed() / rounds;
        eprintln!("rights + hidden_names per request: {per:?} ({hidden} hidden names)");
    }
}
