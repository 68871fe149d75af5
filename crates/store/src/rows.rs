//! Reading and writing version rows: sealing on the way in, authenticating on the way out.

use std::str::FromStr;
use std::sync::Arc;

use mamori_fhir::resource_type::ResourceType;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::StoreError;
use crate::category::Visibility;
use crate::keyring::{KeyRing, scope_for};
use crate::model::VersionRecord;
use crate::version_cache::VersionCache;

/// Whether bodies are sealed. Always true outside the benchmark baseline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Protection {
    pub encrypt: bool,
    pub audit: bool,
}

impl Protection {
    pub(crate) const FULL: Protection = Protection { encrypt: true, audit: true };
}

/// The columns every version query selects, in this order.
pub(crate) const VERSION_COLUMNS: &str =
    "v.seq, v.rtype, v.id, v.version, v.last_updated_us, v.deleted, v.key_id, v.patients, v.body";

/// A version row as it sits in the database, still sealed.
pub(crate) struct SealedRow {
    pub seq: i64,
    pub rtype: String,
    pub id: String,
    pub version: i64,
    pub last_updated_us: i64,
    pub deleted: bool,
    pub key_id: i64,
    pub patients: String,
    pub body: Vec<u8>,
}

impl SealedRow {
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<SealedRow> {
        Ok(SealedRow {
            seq: r.get(0)?,
            rtype: r.get(1)?,
            id: r.get(2)?,
            version: r.get(3)?,
            last_updated_us: r.get(4)?,
            deleted: r.get(5)?,
            key_id: r.get(6)?,
            patients: r.get(7)?,
            body: r.get(8)?,
        })
    }

    fn what(&self) -> String {
        format!("{}/{}/_history/{}", self.rtype, self.id, self.version)
    }
}

/// The associated data that binds a sealed body to every other column of its row, so moving a
/// body, flipping the deleted flag or editing the patient list is detected (REC-6).
fn row_aad(
    rtype: &str,
    id: &str,
    version: i64,
    last_updated_us: i64,
    deleted: bool,
    key_id: i64,
    patients: &str,
) -> Vec<u8> {
    format!("mamori/version/{rtype}\0{id}\0{version}\0{last_updated_us}\0{}\0{key_id}\0{patients}", u8::from(deleted))
        .into_bytes()
}

/// Decrypts and authenticates one row.
pub(crate) fn open_row(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    row: &SealedRow,
) -> Result<VersionRecord, StoreError> {
    let rtype = ResourceType::from_str(&row.rtype).map_err(|_| StoreError::Tampered(row.what()))?;
    let plain = if protect.encrypt {
        let key = keys.by_id(conn, row.key_id)?;
        let aad =
            row_aad(&row.rtype, &row.id, row.version, row.last_updated_us, row.deleted, row.key_id, &row.patients);
        key.open(&row.body, &aad).ok_or_else(|| StoreError::Tampered(row.what()))?
    } else {
        row.body.clone()
    };
    let patients =
        if row.patients.is_empty() { Vec::new() } else { row.patients.split(',').map(str::to_string).collect() };
    Ok(VersionRecord {
        rtype,
        id: row.id.clone(),
        version: row.version as u64,
        last_updated_us: row.last_updated_us,
        deleted: row.deleted,
        patients,
        body: if row.deleted { None } else { Some(plain) },
    })
}

/// The current version of a resource, if it ever existed.
pub(crate) fn load_current(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    rtype: ResourceType,
    id: &str,
) -> Result<Option<VersionRecord>, StoreError> {
    Ok(match load_current_visible(conn, keys, protect, rtype, id, &Visibility::default())? {
        Current::Found(r) => Some(r),
        Current::Missing | Current::Hidden => None,
    })
}

/// What a read of a resource's current version found.
pub(crate) enum Current {
    Missing,
    /// It exists but carries a category the request may not view (ACL-3).
    Hidden,
    Found(VersionRecord),
}

/// The current version, unless the request may not see it (a hidden category, or outside the
/// compartment it is confined to). One statement, so one read snapshot: the current version's
/// categories sit beside it in `resource_current`, so a read under a policy costs about what an
/// unrestricted one does.
pub(crate) fn load_current_visible(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    rtype: ResourceType,
    id: &str,
    vis: &Visibility,
) -> Result<Current, StoreError> {
    if vis.hides_type(rtype.as_str()) {
        return Ok(Current::Hidden);
    }
    let row = conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS}, c.version, c.categories FROM resource_current c \
             JOIN resource_version v ON v.seq = c.seq WHERE c.rtype = ?1 AND c.id = ?2"
        ))?
        .query_row(params![rtype.as_str(), id], |r| {
            Ok((SealedRow::from_row(r)?, r.get::<_, i64>(9)?, r.get::<_, String>(10)?))
        })
        .optional()?;
    match row {
        None => Ok(Current::Missing),
        Some((row, pointer, _)) if pointer != row.version => Err(StoreError::Tampered(row.what())),
        Some((row, _, categories))
            if crate::category::names_hidden(&categories, &vis.hidden) || vis.outside(&row.patients) =>
        {
            Ok(Current::Hidden)
        }
        Some((row, _, _)) => open_row(conn, keys, protect, &row).map(Current::Found),
    }
}

/// A current version as `resource_current` names it: its seq, the version number the pointer
/// claims, and a value the caller carries along (a search's rid).
pub(crate) struct Pointer {
    seq: i64,
    version: i64,
    extra: i64,
}

impl Pointer {
    /// From the first three columns of a row: seq, version, extra.
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Pointer> {
        Ok(Pointer { seq: r.get(0)?, version: r.get(1)?, extra: r.get(2)? })
    }
}

/// Opens the versions `pointers` name, in order, through the readers' cache.
pub(crate) fn open_pointers(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    cache: &VersionCache,
    pointers: Vec<Pointer>,
) -> Result<Vec<(VersionRecord, i64)>, StoreError> {
    let mut out = Vec::with_capacity(pointers.len());
    for p in pointers {
        if let Some(rec) = open_pointed(conn, keys, protect, cache, p.seq, p.version)? {
            out.push((rec, p.extra));
        }
    }
    Ok(out)
}

/// Opens version `seq`, which `resource_current` points at as version `pointer` of its resource;
/// a row that disagrees with its pointer was moved or edited (REC-6).
pub(crate) fn open_pointed(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    cache: &VersionCache,
    seq: i64,
    pointer: i64,
) -> Result<Option<VersionRecord>, StoreError> {
    let Some(row) = sealed_version(conn, cache, seq)? else { return Ok(None) };
    if pointer != row.version {
        return Err(StoreError::Tampered(row.what()));
    }
    open_row(conn, keys, protect, &row).map(Some)
}

/// The sealed row of version `seq`, from the cache or the database (and then cached).
pub(crate) fn sealed_version(
    conn: &Connection,
    cache: &VersionCache,
    seq: i64,
) -> Result<Option<Arc<SealedRow>>, StoreError> {
    if let Some(row) = cache.get(seq) {
        return Ok(Some(row));
    }
    let row = conn
        .prepare_cached(&format!("SELECT {VERSION_COLUMNS} FROM resource_version v WHERE v.seq = ?1"))?
        .query_row([seq], SealedRow::from_row)
        .optional()?
        .map(Arc::new);
    if let Some(r) = &row {
        cache.insert(seq, Arc::clone(r));
    }
    Ok(row)
}

pub(crate) fn load_version(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    rtype: ResourceType,
    id: &str,
    version: u64,
) -> Result<Option<VersionRecord>, StoreError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM resource_version v WHERE v.rtype = ?1 AND v.id = ?2 AND v.version = ?3"
        ))?
        .query_row(params![rtype.as_str(), id, version as i64], SealedRow::from_row)
        .optional()?;
    row.map(|r| open_row(conn, keys, protect, &r)).transpose()
}

/// The current version number and deletion state, without decrypting anything.
pub(crate) fn current_state(
    conn: &Connection,
    rtype: ResourceType,
    id: &str,
) -> Result<Option<(u64, bool)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT version, deleted FROM resource_current WHERE rtype = ?1 AND id = ?2")?
        .query_row(params![rtype.as_str(), id], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, bool>(1)?)))
        .optional()?)
}

/// Appends a version and moves the current pointer; returns the resource's rid (its first seq)
/// and the new version's seq.
/// Appends a version and points `resource_current` at it, with the version's information
/// categories beside the pointer (what a read checks the request's hidden categories against).
pub(crate) fn insert_version(
    conn: &Connection,
    keys: &KeyRing,
    protect: Protection,
    rec: &VersionRecord,
    categories: &[String],
) -> Result<(i64, i64), StoreError> {
    let patients = rec.patients.join(",");
    let plain: &[u8] = rec.body.as_deref().unwrap_or(b"");
    let (key_id, sealed) = if protect.encrypt {
        let (key_id, key) = keys.for_scope(conn, &scope_for(&rec.patients))?;
        let aad = row_aad(
            rec.rtype.as_str(),
            &rec.id,
            rec.version as i64,
            rec.last_updated_us,
            rec.deleted,
            key_id,
            &patients,
        );
        (key_id, key.seal(plain, &aad)?)
    } else {
        (0, plain.to_vec())
    };
    conn.prepare_cached(
        "INSERT INTO resource_version (rtype, id, version, last_updated_us, deleted, key_id, patients, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        rec.rtype.as_str(),
        rec.id,
        rec.version as i64,
        rec.last_updated_us,
        rec.deleted,
        key_id,
        patients,
        sealed
    ])?;
    let seq = conn.last_insert_rowid();
    // first_seq is set once, by the first version, and names the resource in the search index.
    let rid = conn
        .prepare_cached(
            "INSERT INTO resource_current (rtype, id, version, seq, deleted, first_seq, categories) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?6) \
             ON CONFLICT (rtype, id) DO UPDATE SET version = excluded.version, seq = excluded.seq, \
             deleted = excluded.deleted, categories = excluded.categories \
             RETURNING first_seq",
        )?
        .query_row(
            params![rec.rtype.as_str(), rec.id, rec.version as i64, seq, rec.deleted, categories.join(",")],
            |r| r.get(0),
        )?;
    Ok((rid, seq))
}
