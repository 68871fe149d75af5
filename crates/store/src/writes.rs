//! Creating new versions. Runs on the writer connection, inside the caller's savepoint.

use mamori_fhir::compartment::patient_ids;
use mamori_fhir::resource_type::ResourceType;
use rusqlite::Connection;
use serde_json::{Map, Value};

use crate::StoreError;
use crate::category;
use crate::clock::fhir_instant;
use crate::keyring::KeyRing;
use crate::keys::IndexKey;
use crate::model::VersionRecord;
use crate::rows::{self, Protection};
use crate::search::maintain::{Previous, reindex};
use crate::search::params::SearchQuery;
use mamori_access::Operation;

/// What a write did, for the response status and the audit row.
#[derive(Clone, Debug)]
pub enum WriteOutcome {
    Created(VersionRecord),
    Updated(VersionRecord),
    /// A conditional create matched an existing resource; nothing was written.
    Existing(VersionRecord),
    /// A delete; `None` when there was nothing (left) to delete.
    Deleted(Option<VersionRecord>),
}

impl WriteOutcome {
    pub fn record(&self) -> Option<&VersionRecord> {
        match self {
            WriteOutcome::Created(r) | WriteOutcome::Updated(r) | WriteOutcome::Existing(r) => Some(r),
            WriteOutcome::Deleted(r) => r.as_ref(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            WriteOutcome::Created(_) => 201,
            WriteOutcome::Updated(_) | WriteOutcome::Existing(_) => 200,
            WriteOutcome::Deleted(_) => 200,
        }
    }
}

/// A write request, already parsed and checked by the caller.
#[derive(Clone, Debug)]
pub enum WriteOp {
    Create {
        rtype: ResourceType,
        resource: Value,
        if_none_exist: Option<SearchQuery>,
    },
    /// Update, or create with the client's id if the resource does not exist (update-as-create).
    Update {
        rtype: ResourceType,
        id: String,
        resource: Value,
        if_match: Option<u64>,
    },
    ConditionalUpdate {
        rtype: ResourceType,
        query: SearchQuery,
        resource: Value,
        if_match: Option<u64>,
    },
    Patch {
        rtype: ResourceType,
        id: String,
        patch: json_patch::Patch,
        if_match: Option<u64>,
    },
    Delete {
        rtype: ResourceType,
        id: String,
        if_match: Option<u64>,
    },
    ConditionalDelete {
        rtype: ResourceType,
        query: SearchQuery,
    },
}

impl WriteOp {
    pub fn rtype(&self) -> ResourceType {
        match self {
            WriteOp::Create { rtype, .. }
            | WriteOp::Update { rtype, .. }
            | WriteOp::ConditionalUpdate { rtype, .. }
            | WriteOp::Patch { rtype, .. }
            | WriteOp::Delete { rtype, .. }
            | WriteOp::ConditionalDelete { rtype, .. } => *rtype,
        }
    }

    pub fn target_id(&self) -> Option<&str> {
        match self {
            WriteOp::Update { id, .. } | WriteOp::Patch { id, .. } | WriteOp::Delete { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// The writer's view of one transaction.
pub(crate) struct Tx<'a> {
    pub conn: &'a Connection,
    pub keys: &'a KeyRing,
    pub index: &'a IndexKey,
    pub protect: Protection,
    pub now_us: i64,
    /// Categorises new versions (the store's policy).
    pub policy: &'a mamori_access::Policy,
    /// What the caller may do, per operation and category (ACL-2, ACL-3).
    pub rights: &'a mamori_access::Rights,
    /// Categories the caller may not view: resources in them are treated as absent.
    pub hidden: &'a category::Visibility,
}

/// A server-assigned id: a UUIDv7 (time-ordered, 74 random bits) from the store's clock.
/// Time order keeps inserts into the `(type, id)` indexes local instead of scattering them over
/// the B-trees — at 100,000 resources that halved the pages each commit writes. The embedded
/// time is no secret: `lastUpdated` states it anyway.
pub(crate) fn new_id(now_us: i64) -> String {
    let secs = now_us.div_euclid(1_000_000) as u64;
    let nanos = (now_us.rem_euclid(1_000_000) * 1000) as u32;
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos)).to_string()
}

impl Tx<'_> {
    pub(crate) fn apply(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        match op {
            WriteOp::Create { rtype, resource, if_none_exist } => {
                if let Some(q) = if_none_exist
                    && let Some(existing) = self.resolve_conditional(rtype, &q)?
                {
                    return Ok(WriteOutcome::Existing(existing));
                }
                self.create(rtype, resource, None).map(WriteOutcome::Created)
            }
            WriteOp::Update { rtype, id, resource, if_match } => self.update(rtype, &id, resource, if_match),
            WriteOp::ConditionalUpdate { rtype, query, resource, if_match } => match self.find_unique(rtype, &query)? {
                Some(id) => {
                    if let Some(body_id) = resource.get("id").and_then(Value::as_str)
                        && body_id != id
                    {
                        return Err(StoreError::invalid(
                            "invalid",
                            "the resource id does not match the resource the condition selected",
                        ));
                    }
                    self.update(rtype, &id, resource, if_match)
                }
                None => {
                    let id = resource.get("id").and_then(Value::as_str).map(str::to_string);
                    self.create(rtype, resource, id).map(WriteOutcome::Created)
                }
            },
            WriteOp::Patch { rtype, id, patch, if_match } => self.patch(rtype, &id, &patch, if_match),
            WriteOp::Delete { rtype, id, if_match } => {
                // Invisible to the caller: absent, whatever If-Match says (no 412 to reveal it).
                if category::is_invisible(self.conn, self.hidden, rtype.as_str(), &id, None)? {
                    return Ok(WriteOutcome::Deleted(None));
                }
                if let Some(expected) = if_match {
                    self.check_version(rtype, &id, expected)?;
                }
                self.delete(rtype, &id).map(WriteOutcome::Deleted)
            }
            WriteOp::ConditionalDelete { rtype, query } => match self.find_unique(rtype, &query)? {
                Some(id) => self.delete(rtype, &id).map(WriteOutcome::Deleted),
                None => Ok(WriteOutcome::Deleted(None)),
            },
        }
    }

    /// Ids matching a conditional query: at most two are fetched, enough to tell 0, 1 or many.
    pub(crate) fn find(&self, rtype: ResourceType, q: &SearchQuery) -> Result<Vec<String>, StoreError> {
        let mut q = q.clone();
        q.rtype = rtype;
        q.cursor = None;
        let ctx = crate::search::sql::Ctx {
            conn: self.conn,
            keys: self.keys,
            index: self.index,
            protect: self.protect,
            now_us: self.now_us,
            hidden: self.hidden,
            versions: &crate::version_cache::NOT_IN_WRITES,
        };
        crate::search::sql::matching_ids(&ctx, &q, 2)
    }

    /// The single resource a condition selects; more than one is a 412 (FHIR conditional rules).
    pub(crate) fn find_unique(&self, rtype: ResourceType, q: &SearchQuery) -> Result<Option<String>, StoreError> {
        if !q.has_criteria() {
            return Err(StoreError::invalid("invalid", "a conditional operation needs at least one search parameter"));
        }
        let ids = self.find(rtype, q)?;
        match ids.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(StoreError::PreconditionFailed(format!("the condition matches more than one {rtype}"))),
        }
    }

    fn resolve_conditional(&self, rtype: ResourceType, q: &SearchQuery) -> Result<Option<VersionRecord>, StoreError> {
        match self.find_unique(rtype, q)? {
            None => Ok(None),
            Some(id) => rows::load_current(self.conn, self.keys, self.protect, rtype, &id),
        }
    }

    /// An existing, current (not deleted) resource the caller wants to change: invisible to the
    /// caller → NotFound; visible but not permitted for `op` → Forbidden. Returns its categories.
    fn guard_existing(&self, rtype: ResourceType, id: &str, op: Operation) -> Result<Vec<String>, StoreError> {
        let Some(seq) = category::current_seq(self.conn, rtype.as_str(), id)? else { return Ok(Vec::new()) };
        if category::is_invisible(self.conn, self.hidden, rtype.as_str(), id, None)? {
            return Err(StoreError::NotFound(format!("{rtype}/{id}")));
        }
        let names = category::of_seq(self.conn, seq)?;
        if !self.rights.permits_type(op, rtype.as_str())
            || !self.rights.permits_names(op, names.iter().map(String::as_str))
        {
            return Err(StoreError::Forbidden);
        }
        Ok(names)
    }

    fn check_version(&self, rtype: ResourceType, id: &str, expected: u64) -> Result<(), StoreError> {
        match rows::current_state(self.conn, rtype, id)? {
            Some((v, _)) if v == expected => Ok(()),
            Some((v, _)) => Err(StoreError::VersionConflict(format!(
                "If-Match expected version {expected} of {rtype}/{id}, but the current version is {v}"
            ))),
            None => Err(StoreError::VersionConflict(format!("If-Match given but {rtype}/{id} does not exist"))),
        }
    }

    pub(crate) fn create(
        &self,
        rtype: ResourceType,
        body: Value,
        id: Option<String>,
    ) -> Result<VersionRecord, StoreError> {
        let id = id.unwrap_or_else(|| new_id(self.now_us));
        if rows::current_state(self.conn, rtype, &id)?.is_some() {
            return Err(StoreError::PreconditionFailed(format!("{rtype}/{id} already exists")));
        }
        self.write_version(rtype, &id, 1, body)
    }

    fn update(
        &self,
        rtype: ResourceType,
        id: &str,
        body: Value,
        if_match: Option<u64>,
    ) -> Result<WriteOutcome, StoreError> {
        // AUTH-6: a type outside the token's read scopes can at most be created (`.c` alone).
        if self.hidden.hides_type(rtype.as_str()) {
            if rows::current_state(self.conn, rtype, id)?.is_some()
                || !self.rights.permits_type(Operation::Create, rtype.as_str())
            {
                return Err(StoreError::Forbidden);
            }
        } else if category::is_invisible(self.conn, self.hidden, rtype.as_str(), id, None)? {
            // Invisible to the caller: answer as for a missing resource before If-Match can tell.
            return Err(StoreError::NotFound(format!("{rtype}/{id}")));
        }
        if let Some(expected) = if_match {
            self.check_version(rtype, id, expected)?;
        }
        match rows::current_state(self.conn, rtype, id)? {
            None => self.write_version(rtype, id, 1, body).map(WriteOutcome::Created),
            // Updating a deleted resource brings it back as a new version; history is kept.
            Some((v, deleted)) => {
                let rec = self.write_version(rtype, id, v + 1, body)?;
                Ok(if deleted { WriteOutcome::Created(rec) } else { WriteOutcome::Updated(rec) })
            }
        }
    }

    fn patch(
        &self,
        rtype: ResourceType,
        id: &str,
        patch: &json_patch::Patch,
        if_match: Option<u64>,
    ) -> Result<WriteOutcome, StoreError> {
        if category::is_invisible(self.conn, self.hidden, rtype.as_str(), id, None)? {
            return Err(StoreError::NotFound(format!("{rtype}/{id}")));
        }
        if let Some(expected) = if_match {
            self.check_version(rtype, id, expected)?;
        }
        let current = rows::load_current(self.conn, self.keys, self.protect, rtype, id)?
            .ok_or_else(|| StoreError::NotFound(format!("{rtype}/{id}")))?;
        let Some(bytes) = &current.body else {
            return Err(StoreError::Gone { what: format!("{rtype}/{id}"), version: current.version });
        };
        let mut doc: Value = serde_json::from_slice(bytes).map_err(StoreError::internal)?;
        json_patch::patch(&mut doc, patch)
            .map_err(|e| StoreError::invalid("processing", format!("the JSON Patch could not be applied: {e}")))?;
        let (patched_type, patched_id) = mamori_fhir::validate::check_resource(&doc)?;
        if patched_type != rtype || patched_id.as_ref().map(|i| i.as_str()) != Some(id) {
            return Err(StoreError::invalid("invalid", "a patch may not change resourceType or id"));
        }
        self.write_version(rtype, id, current.version + 1, doc).map(WriteOutcome::Updated)
    }

    pub(crate) fn delete(&self, rtype: ResourceType, id: &str) -> Result<Option<VersionRecord>, StoreError> {
        match rows::current_state(self.conn, rtype, id)? {
            Some((v, false)) => {
                // A resource the caller cannot see is, to the caller, absent.
                if category::is_invisible(self.conn, self.hidden, rtype.as_str(), id, None)? {
                    return Ok(None);
                }
                let names = self.guard_existing(rtype, id, Operation::Delete)?;
                let current = rows::load_current(self.conn, self.keys, self.protect, rtype, id)?;
                let previous = previous_body(current.as_ref())?;
                let tombstone = VersionRecord {
                    rtype,
                    id: id.to_string(),
                    version: v + 1,
                    last_updated_us: self.now_us,
                    deleted: true,
                    // A tombstone stays in the compartment of the resource it ends.
                    patients: current.map(|r| r.patients).unwrap_or_default(),
                    body: None,
                };
                let (rid, seq) = rows::insert_version(self.conn, self.keys, self.protect, &tombstone, &names)?;
                category::store(self.conn, seq, &names)?;
                reindex(self.conn, self.index, rtype.as_str(), rid, Previous::Existing(previous.as_ref()), None, &[])?;
                crate::flags::update(self.conn, rtype.as_str(), id, None)?;
                Ok(Some(tombstone))
            }
            _ => Ok(None),
        }
    }

    /// Stamps id and meta, indexes, seals and appends one version.
    pub(crate) fn write_version(
        &self,
        rtype: ResourceType,
        id: &str,
        version: u64,
        mut body: Value,
    ) -> Result<VersionRecord, StoreError> {
        let obj =
            body.as_object_mut().ok_or_else(|| StoreError::invalid("structure", "a resource must be a JSON object"))?;
        if obj.get("resourceType").and_then(Value::as_str) != Some(rtype.as_str()) {
            return Err(StoreError::invalid("invalid", format!("resourceType must be {rtype}")));
        }
        obj.insert("id".into(), Value::String(id.to_string()));
        let meta = obj.entry("meta").or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            return Err(StoreError::invalid("structure", format!("{rtype}.meta must be an object")));
        }
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".into(), Value::String(version.to_string()));
            meta.insert("lastUpdated".into(), Value::String(fhir_instant(self.now_us)));
        }
        // ACL-2: changing an existing resource needs update rights on what it is now, and on what
        // it becomes; a new (or revived) one needs create rights on its categories.
        let names = category::of_body(self.policy, rtype.as_str(), &body);
        let live = matches!(rows::current_state(self.conn, rtype, id)?, Some((_, false)));
        let op = if live { Operation::Update } else { Operation::Create };
        if live {
            self.guard_existing(rtype, id, Operation::Update)?;
        }
        // AUTH-6: under SMART scopes the type must be in scope for the operation too.
        if !self.rights.permits_type(op, rtype.as_str())
            || !self.rights.permits_names(op, names.iter().map(String::as_str))
        {
            return Err(StoreError::Forbidden);
        }
        let patients = patient_ids(&body, rtype);
        // ACL-4: a patient (if allowed to write at all) writes only into their own compartment.
        if category::writes_outside(self.hidden, &patients) {
            return Err(StoreError::Forbidden);
        }
        let rec = VersionRecord {
            rtype,
            id: id.to_string(),
            version,
            last_updated_us: self.now_us,
            deleted: false,
            patients,
            body: Some(serde_json::to_vec(&body).map_err(StoreError::internal)?),
        };
        // The body the index holds now, so its token rows can be found and removed.
        let previous = if live {
            previous_body(rows::load_current(self.conn, self.keys, self.protect, rtype, id)?.as_ref())?
        } else {
            None
        };
        let (rid, seq) = rows::insert_version(self.conn, self.keys, self.protect, &rec, &names)?;
        category::store(self.conn, seq, &names)?;
        let previous = if rid == seq { Previous::Fresh } else { Previous::Existing(previous.as_ref()) };
        reindex(self.conn, self.index, rtype.as_str(), rid, previous, Some(&body), &rec.patients)?;
        crate::flags::update(self.conn, rtype.as_str(), id, Some(&body))?;
        Ok(rec)
    }
}

/// The parsed body of a current version that is not deleted (what the search index holds).
fn previous_body(current: Option<&VersionRecord>) -> Result<Option<Value>, StoreError> {
    match current.and_then(|r| r.body.as_deref()) {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes).map_err(StoreError::internal)?)),
        None => Ok(None),
    }
}
