//! The SQLite schema and its migration chain (`PRAGMA user_version`).
//!
//! Nothing identifying is stored in the clear: bodies are sealed, search values are keyed tokens.
//! What is clear: resource types, server ids, version numbers, timestamps, account names, and
//! the audit rows (which name users, addresses and patient *ids*, never names or identifiers).

use rusqlite::Connection;

use crate::StoreError;

/// The records database (`mamori.db`): resources, keys, search index, accounts.
/// Each entry upgrades the schema by one version; never edit a released entry, append a new one.
const RECORD_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Data keys, wrapped by the key-encryption key derived from the master key file.
-- scope is 'shared' or 'patient:<id>'; dropping a patient's row erases its records (DSP-2).
CREATE TABLE data_key (
    key_id  INTEGER PRIMARY KEY,
    scope   TEXT NOT NULL UNIQUE,
    wrapped BLOB NOT NULL
);

-- Every version of every resource; never updated or deleted (REC-1).
-- body = AES-256-GCM(nonce || ciphertext || tag), bound to all other columns of the row.
CREATE TABLE resource_version (
    seq             INTEGER PRIMARY KEY,
    rtype           TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    last_updated_us INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    key_id          INTEGER NOT NULL,
    patients        TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    UNIQUE (rtype, id, version)
);
CREATE INDEX resource_version_by_type ON resource_version (rtype, seq);
CREATE INDEX resource_version_by_time ON resource_version (last_updated_us);

-- The current version of each resource: the one mutable table, rewritten on each new version.
CREATE TABLE resource_current (
    rtype   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (rtype, id)
) WITHOUT ROWID;

-- Search index over the current versions: HMAC tokens of identifying values.
CREATE TABLE idx_token (
    rtype TEXT NOT NULL,
    param TEXT NOT NULL,
    token BLOB NOT NULL,
    id    TEXT NOT NULL,
    PRIMARY KEY (rtype, param, token, id)
) WITHOUT ROWID;
CREATE INDEX idx_token_by_resource ON idx_token (rtype, id);

CREATE TABLE account (
    name              TEXT PRIMARY KEY,
    role              TEXT NOT NULL,
    created_us        INTEGER NOT NULL,
    disabled_us       INTEGER,
    -- SHA-256 of the one-time setup secret of the first administrator (AUTH-4); cleared on use.
    setup_secret_hash BLOB
) WITHOUT ROWID;

CREATE TABLE api_token (
    hash       BLOB PRIMARY KEY,
    account    TEXT NOT NULL REFERENCES account(name),
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER resource_version_no_update BEFORE UPDATE ON resource_version
BEGIN SELECT RAISE(ABORT, 'resource versions are immutable'); END;
CREATE TRIGGER resource_version_no_delete BEFORE DELETE ON resource_version
BEGIN SELECT RAISE(ABORT, 'resource versions are immutable'); END;
"#,
    r#"
-- Search over encrypted storage (issue 3). Index rows name a resource by rid, the seq of its
-- first version (stable for its life), and a parameter by pid, a 63-bit hash of (type, code).
-- String, token and uri values are HMAC tokens (ENC-1); references, dates and numbers are clear.
ALTER TABLE resource_current ADD COLUMN first_seq INTEGER NOT NULL DEFAULT 0;
UPDATE resource_current SET first_seq =
    (SELECT min(v.seq) FROM resource_version v WHERE v.rtype = resource_current.rtype AND v.id = resource_current.id);
CREATE UNIQUE INDEX resource_current_by_rid ON resource_current (first_seq);

DROP TABLE idx_token;
CREATE TABLE idx_token (
    pid   INTEGER NOT NULL,
    token BLOB    NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (pid, token, rid)
) WITHOUT ROWID;
CREATE INDEX idx_token_by_rid ON idx_token (rid);

-- References name server ids (never identifying); url keeps absolute references and canonicals.
CREATE TABLE idx_ref (
    pid         INTEGER NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    url         TEXT,
    rid         INTEGER NOT NULL
);
CREATE INDEX idx_ref_by_target ON idx_ref (pid, target_type, target_id);
CREATE INDEX idx_ref_by_target_id ON idx_ref (target_id, target_type);
CREATE INDEX idx_ref_by_url ON idx_ref (pid, url) WHERE url IS NOT NULL;
CREATE INDEX idx_ref_by_rid ON idx_ref (rid, pid);

-- Instant ranges in microseconds, inclusive; open Period ends are the i64 extremes.
CREATE TABLE idx_date (
    pid INTEGER NOT NULL,
    lo  INTEGER NOT NULL,
    hi  INTEGER NOT NULL,
    rid INTEGER NOT NULL
);
CREATE INDEX idx_date_by_lo ON idx_date (pid, lo);
CREATE INDEX idx_date_by_hi ON idx_date (pid, hi);
CREATE INDEX idx_date_by_rid ON idx_date (rid, pid);

-- Numbers and quantities (value with its unit system and code).
CREATE TABLE idx_number (
    pid    INTEGER NOT NULL,
    value  REAL    NOT NULL,
    system TEXT,
    code   TEXT,
    rid    INTEGER NOT NULL
);
CREATE INDEX idx_number_by_value ON idx_number (pid, value);
CREATE INDEX idx_number_by_rid ON idx_number (rid, pid);

-- Which parameters have a value at all (:missing).
CREATE TABLE idx_present (
    pid INTEGER NOT NULL,
    rid INTEGER NOT NULL,
    PRIMARY KEY (pid, rid)
) WITHOUT ROWID;
CREATE INDEX idx_present_by_rid ON idx_present (rid);

-- Patient compartment membership of current versions (compartment search, $everything).
CREATE TABLE idx_compartment (
    patient TEXT    NOT NULL,
    rid     INTEGER NOT NULL,
    PRIMARY KEY (patient, rid)
) WITHOUT ROWID;
CREATE INDEX idx_compartment_by_rid ON idx_compartment (rid);
"#,
    crate::identity::MIGRATION,
    // ACL-2/3: the information categories of every version (category *names* in the clear; a
    // copied database shows which opaque resource ids carry which category).
    r#"
CREATE TABLE resource_category (
    category TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (category, seq)
) WITHOUT ROWID;
CREATE INDEX resource_category_by_seq ON resource_category (seq);
"#,
    crate::lifecycle::MIGRATION,
    r#"
-- Patients flagged for audit review (AUD-4): VIP (meta.security CELEB) and staff (EMP).
CREATE TABLE patient_flag (
    patient TEXT PRIMARY KEY,
    flag    TEXT NOT NULL
) WITHOUT ROWID;
"#,
    crate::patients::MIGRATION,
    crate::oauth::MIGRATION,
    crate::webauthn::MIGRATION,
    r#"
-- The token index as sorted runs (search/runs.rs): new rows go into a small open run, full runs
-- are merged into larger ones in key order, lookups ask every live run. No by-rid copy: a
-- resource's old rows are found by extracting its previous version again. Rebuilt at open
-- (INDEX_VERSION 3).
DROP TABLE idx_token;
CREATE TABLE idx_token (
    run   INTEGER NOT NULL,
    pid   INTEGER NOT NULL,
    token BLOB    NOT NULL,
    rid   INTEGER NOT NULL,
    PRIMARY KEY (run, pid, token, rid)
) WITHOUT ROWID;
-- state: 0 open (takes new rows), 1 sealed, 2 being merged into the run in state 3.
CREATE TABLE idx_token_run (
    run   INTEGER PRIMARY KEY,
    level INTEGER NOT NULL,
    state INTEGER NOT NULL,
    rows  INTEGER NOT NULL
);
INSERT INTO idx_token_run (run, level, state, rows) VALUES (1, 0, 0, 0);
"#,
    r#"
-- The current version's categories beside it (comma-separated, as in resource_category): a read
-- checks the request's hidden categories on the row it already fetches, without a second seek.
ALTER TABLE resource_current ADD COLUMN categories TEXT NOT NULL DEFAULT '';
UPDATE resource_current SET categories = coalesce(
    (SELECT group_concat(category, ',') FROM resource_category k WHERE k.seq = resource_current.seq), '');
"#,
    r#"
-- Searches select, count and page by the rid (first_seq). With the deleted flag and the version
-- pointer in the index (and the key (rtype, id), which every index of a WITHOUT ROWID table
-- carries), a candidate costs one seek instead of two: a 3-letter name prefix at 100,000 patients
-- counts about 230 of them.
DROP INDEX resource_current_by_rid;
CREATE INDEX resource_current_by_rid ON resource_current (first_seq, deleted, seq, version);
"#,
    crate::oauth::SIGN_IN_MIGRATION,
    crate::oauth_launch::MIGRATION,
    crate::oidc::MIGRATION,
];

/// The audit database (`mamori-audit.db`). It is a file of its own so that audit-only commits
/// (one per read) do not invalidate the page caches of the connections reading records. The
/// writer opens it as `main` and attaches the records database; SQLite commits `main` first, so an
/// audit row is durable before the data it describes — a crash in between leaves a record of an
/// attempted change, never an unrecorded one.
const AUDIT_MIGRATIONS: &[&str] = &[
    r#"
-- The audit trail (AUD-1). Append-only: the triggers below refuse UPDATE and DELETE from any
-- connection; the tamper-evident sealing (Merkle tree, signed checkpoints) builds on seq order.
CREATE TABLE audit_event (
    seq         INTEGER PRIMARY KEY,
    recorded_us INTEGER NOT NULL,
    request_id  TEXT    NOT NULL,
    actor       TEXT,
    role        TEXT,
    source      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    rtype       TEXT,
    rid         TEXT,
    version     INTEGER,
    patients    TEXT    NOT NULL,
    outcome     INTEGER NOT NULL,
    detail      TEXT
);
CREATE INDEX audit_by_actor ON audit_event (actor, seq);

CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
"#,
    r#"
-- Signed checkpoints of the audit trail's Merkle tree (AUD-2): C2SP signed notes over the
-- first `size` audit_event rows in seq order. Also appended to the witness file outside the
-- database, so a rewritten table cannot rewrite history unseen.
CREATE TABLE audit_checkpoint (
    size        INTEGER PRIMARY KEY,
    recorded_us INTEGER NOT NULL,
    note        TEXT    NOT NULL
);
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
"#,
    r#"
-- Which patients each audit row names, for the review views (AUD-4): "who accessed this
-- patient" and per-patient counts without scanning the trail. Derived from audit_event.patients
-- (which the Merkle tree covers); written in the same transaction as its row.
CREATE TABLE audit_patient (
    patient TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)
) WITHOUT ROWID;
CREATE TRIGGER audit_patient_no_update BEFORE UPDATE ON audit_patient
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TRIGGER audit_patient_no_delete BEFORE DELETE ON audit_patient
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
"#,
    r#"
-- audit_patient is filled behind the trail (audit::index_patients, on the writer between
-- commits): a search naming 50 patients dirtied 50 random index pages inside the request's own
-- durable commit. The row's patient list is what is authoritative and Merkle-covered, and it is
-- still written synchronously. `upto` is the last audit seq indexed; the views read the index up
-- to it and the rows after it directly, so a review never misses or double-counts a row.
CREATE TABLE audit_patient_mark (upto INTEGER NOT NULL);
INSERT INTO audit_patient_mark (upto) SELECT COALESCE(max(seq), 0) FROM audit_event;
-- Patient ids are FHIR ids ([A-Za-z0-9.-]), so the comma list becomes a JSON array safely.
CREATE VIEW audit_patient_all (patient, seq) AS
    SELECT patient, seq FROM audit_patient
    UNION ALL
    SELECT j.value, e.seq FROM audit_event e, json_each('["' || replace(e.patients, ',', '","') || '"]') j
    WHERE e.seq > (SELECT upto FROM audit_patient_mark) AND e.patients <> '';
"#,
    r#"
-- The per-patient index moved to a file and thread of its own (audit_index.rs): its page writes
-- held the writer, and with it the next request's audit commit. It is derived from the rows'
-- patient lists, so nothing is lost; the new file is built from the trail on the next start.
DROP VIEW audit_patient_all;
DROP TABLE audit_patient_mark;
DROP TABLE audit_patient;
"#,
];

/// Which database file a connection is migrating.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Db {
    Records,
    Audit,
}

/// Brings one database file up to date; run on a connection to that file alone.
pub(crate) fn migrate(conn: &Connection, db: Db) -> Result<(), StoreError> {
    let migrations = match db {
        Db::Records => RECORD_MIGRATIONS,
        Db::Audit => AUDIT_MIGRATIONS,
    };
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let target = migrations.len() as i64;
    if current > target {
        return Err(StoreError::Setup(format!(
            "{db:?} database schema version {current} is newer than this mamori supports ({target}); upgrade mamori"
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;", i + 1)).inspect_err(
            |_| {
                let _ = conn.execute_batch("ROLLBACK");
            },
        )?;
    }
    Ok(())
}

/// Settings of a writing connection for `schema` (`main`, or the name a file is attached as).
pub(crate) fn configure(conn: &Connection, schema: &str, synchronous_full: bool) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(&format!(
        "PRAGMA {schema}.journal_mode = WAL; PRAGMA {schema}.synchronous = {}; PRAGMA foreign_keys = ON; \
         PRAGMA {schema}.secure_delete = ON; PRAGMA {schema}.cache_size = -16384; PRAGMA temp_store = MEMORY;",
        if synchronous_full { "FULL" } else { "NORMAL" }
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

pub(crate) fn configure_reader(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // No mmap: the file grows with every checkpoint, and each growth made every reader remap it
    // (TLB shootdowns dominated the read profile).
    conn.execute_batch("PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}
