//! The embedded SQLite implementation of [`Store`].

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mamori_access::{Policy, Principal, Role, TokenHash};
use mamori_fhir::bundle::{BundleKind, RequestEntry};
use mamori_fhir::resource_type::ResourceType;
use rusqlite::{Connection, OptionalExtension, params};

use crate::bundle::{self, EntryResult, TransactionError};
use crate::clock::{Clock, SystemClock, to_micros};
use crate::engine::{Engine, savepoint_keeping};
use crate::keyring::KeyRing;
use crate::keys::{IndexKey, MasterKey};
use crate::model::{AccessContext, Action, AuditEvent, VersionRecord};
use crate::query::{HistoryQuery, HistoryScope, PageLimits};
use crate::rows::{self, Protection, SealedRow, VERSION_COLUMNS};
use crate::search::{self, params::SearchQuery};
use crate::writes::{Tx, WriteOp, WriteOutcome};
use crate::{Page, Store, StoreError, StoreFuture, audit, schema};

/// How to open the store.
pub struct StoreConfig {
    /// The records database (resources, keys, index, accounts).
    pub path: PathBuf,
    /// The audit database; by default `<records stem>-audit.db` beside the records database.
    pub audit_path: PathBuf,
    /// Merkle sealing of the audit trail with signed checkpoints; `None` leaves it unsealed
    /// (tests of other features, and the benchmark baseline).
    pub sealing: Option<crate::SealingConfig>,
    /// `synchronous=FULL`: a commit is on disk before the caller hears of it (the default).
    pub synchronous_full: bool,
    pub page_limits: PageLimits,
    pub clock: Arc<dyn Clock>,
    /// The access policy whose category rules classify every version (ACL-2).
    pub policy: Arc<Policy>,
    /// Shape of the search index's token runs (sealing and merging thresholds).
    pub index_runs: crate::search::runs::IndexRuns,
    /// Bytes of sealed version rows the readers share in memory (0: none); see version_cache.rs.
    pub version_cache_bytes: u64,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        let audit_path = default_audit_path(&path);
        StoreConfig {
            path,
            audit_path,
            sealing: None,
            synchronous_full: true,
            page_limits: PageLimits::default(),
            clock: Arc::new(SystemClock),
            policy: Arc::new(Policy::builtin().unwrap_or_else(|_| Policy::deny_all())),
            index_runs: crate::search::runs::IndexRuns::default(),
            version_cache_bytes: crate::version_cache::DEFAULT_BYTES,
        }
    }
}

/// `x/mamori.db` → `x/mamori-audit.db`.
pub fn default_audit_path(records: &std::path::Path) -> PathBuf {
    let stem = records.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "mamori".into());
    records.with_file_name(format!("{stem}-audit.db"))
}

#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Arc<Engine>,
    pub(crate) keys: KeyRing,
    pub(crate) index: IndexKey,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) protect: Protection,
    pub(crate) limits: PageLimits,
    /// Sealed version rows shared by the readers (search pages).
    pub(crate) versions: crate::version_cache::VersionCache,
    pub(crate) audit_path: PathBuf,
    /// How far the system clock was last seen to step back (µs), not yet recorded in the trail.
    clock_step_back_us: AtomicI64,
    /// The previous raw clock reading, to tell a step from the monotonic lead of `last_us`.
    last_clock_us: AtomicI64,
    /// The last timestamp handed out: versions and audit rows get strictly increasing times
    /// even if the system clock steps back, so time order and commit order agree.
    last_us: AtomicI64,
}

const KEY_CHECK: &[u8] = b"mamori master key check";

/// Backward clock steps larger than this are recorded in the audit trail.
const CLOCK_STEP_US: i64 = 1_000_000;

impl SqliteStore {
    /// Opens (creating if needed) the database at `cfg.path` with the given master key.
    /// Refuses a database that was created with a different master key.
    pub fn open(cfg: StoreConfig, master: &MasterKey) -> Result<SqliteStore, StoreError> {
        Self::open_with(cfg, master, Protection::FULL)
    }

    /// A store with encryption and audit switched off, to measure what they cost. Compiled only
    /// into the benchmark harness (feature `bench-baseline`), never into the server binary.
    #[cfg(feature = "bench-baseline")]
    pub fn open_unprotected_baseline(cfg: StoreConfig) -> Result<SqliteStore, StoreError> {
        Self::open_with(cfg, &MasterKey::ephemeral(), Protection { encrypt: false, audit: false })
    }

    fn open_with(cfg: StoreConfig, master: &MasterKey, protect: Protection) -> Result<SqliteStore, StoreError> {
        let derived = master.derive();
        let keys = KeyRing::new(derived.kek);
        let index = IndexKey::new(derived.index_key);
        create_private_file(&cfg.path)?;
        create_private_file(&cfg.audit_path)?;
        create_private_file(&crate::audit_index::index_path(&cfg.audit_path))?;
        let records_last: i64 = {
            let conn = Connection::open(&cfg.path)?;
            schema::configure(&conn, "main", cfg.synchronous_full)?;
            schema::migrate(&conn, schema::Db::Records)?;
            verify_master_key(&conn, &keys)?;
            search::maintain::rebuild_if_stale(&conn, &keys, &index, protect)?;
            crate::category::rebuild_if_stale(&conn, &keys, protect, &cfg.policy)?;
            conn.query_row("SELECT COALESCE(max(last_updated_us), 0) FROM resource_version", [], |r| r.get(0))?
        };
        let audit_last: i64 = {
            let conn = Connection::open(&cfg.audit_path)?;
            schema::configure(&conn, "main", cfg.synchronous_full)?;
            schema::migrate(&conn, schema::Db::Audit)?;
            conn.query_row("SELECT COALESCE(max(recorded_us), 0) FROM audit_event", [], |r| r.get(0))?
        };
        let last_us = records_last.max(audit_last);
        let sealer = match (cfg.sealing, protect.audit) {
            (Some(sealing), true) => {
                let clock = Arc::clone(&cfg.clock);
                Some(Box::new(move |c: &Connection| crate::sealer::Sealer::open(c, sealing, clock))
                    as crate::engine::MakeSealer)
            }
            _ => None,
        };
        let engine = Arc::new(Engine::open(&cfg.path, &cfg.audit_path, cfg.synchronous_full, sealer, cfg.index_runs)?);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                engine,
                keys,
                index,
                clock: cfg.clock,
                policy: cfg.policy,
                protect,
                limits: cfg.page_limits,
                versions: crate::version_cache::VersionCache::new(cfg.version_cache_bytes),
                audit_path: cfg.audit_path.clone(),
                last_us: AtomicI64::new(last_us),
                clock_step_back_us: AtomicI64::new(0),
                last_clock_us: AtomicI64::new(last_us),
            }),
        })
    }

    pub fn page_limits(&self) -> PageLimits {
        self.inner.limits
    }

    /// Drains pending writes and stops the writer thread.
    pub fn shutdown(&self) {
        self.inner.engine.shutdown();
    }

    /// Appends one audit row on its own (reads, refusals, operator actions).
    pub(crate) async fn audit(&self, ctx: AccessContext, ev: AuditEvent) -> Result<(), StoreError> {
        if !self.inner.protect.audit {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        self.inner
            .engine
            .write(move |conn| {
                let now = inner.next_time();
                inner.record_clock_step(conn, now, &ctx)?;
                audit::append(conn, now, &ctx, &ev)
            })
            .await
            .map_err(|e| match e {
                StoreError::AuditUnavailable => e,
                other => {
                    tracing::error!(target: "security", error = %other, "audit commit failed; refusing the request");
                    StoreError::AuditUnavailable
                }
            })
    }

    /// Runs `f` as a writer job and audits what it did in the same transaction. The data
    /// changes are undone if `f` fails or `keep` says so (a failed transaction Bundle); the audit
    /// rows describing the outcome are written either way.
    pub(crate) async fn write_audited<T: Send + 'static>(
        &self,
        ctx: AccessContext,
        f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
        keep: fn(&T) -> bool,
        events: impl FnOnce(&Result<T, StoreError>) -> Vec<AuditEvent> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .engine
            .write(move |conn| {
                let now = inner.next_time();
                let hidden = crate::category::Visibility::of(&ctx.rights);
                let tx = Tx {
                    conn,
                    keys: &inner.keys,
                    index: &inner.index,
                    protect: inner.protect,
                    now_us: now,
                    policy: &inner.policy,
                    rights: &ctx.rights,
                    hidden: &hidden,
                };
                let result = savepoint_keeping(conn, |_| f(&tx), keep)?;
                if inner.protect.audit {
                    inner.record_clock_step(conn, now, &ctx)?;
                    for ev in events(&result) {
                        // An error here poisons the whole group commit (see Engine::write).
                        audit::append(conn, now, &ctx, &ev)?;
                    }
                }
                Ok(result)
            })
            .await?
    }
}

/// Creates the database file readable by its owner only; SQLite gives the WAL and shared-memory
/// files the same permissions as the database file.
fn create_private_file(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Setup(format!("cannot create database {}: {e}", path.display()))),
    }
}

fn verify_master_key(conn: &Connection, keys: &KeyRing) -> Result<(), StoreError> {
    let stored: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| r.get(0)).optional()?;
    match stored {
        Some(sealed) => match keys.kek().open(&sealed, b"mamori/key-check") {
            Some(p) if p == KEY_CHECK => Ok(()),
            _ => Err(StoreError::Setup(
                "the master key does not match this database (wrong key file for this data directory?)".into(),
            )),
        },
        None => {
            let sealed = keys.kek().seal(KEY_CHECK, b"mamori/key-check")?;
            conn.execute("INSERT INTO meta (key, value) VALUES ('key_check', ?1)", params![sealed])?;
            Ok(())
        }
    }
}

impl Inner {
    /// Appends a `clock-step` entry if the system clock was seen stepping back (AUD-3).
    fn record_clock_step(&self, conn: &Connection, now: i64, ctx: &AccessContext) -> Result<(), StoreError> {
        let step = self.clock_step_back_us.swap(0, Ordering::Relaxed);
        if step == 0 || !self.protect.audit {
            return Ok(());
        }
        tracing::warn!(target: "security", step_ms = step / 1000, "system clock stepped back; audit time kept monotonic");
        let system = AccessContext::operator(ctx.request_id.clone(), "mamori");
        let ev = AuditEvent::new(Action::ClockStep, 200)
            .with_detail(format!("system clock stepped back {} ms; audit time kept monotonic", step / 1000));
        audit::append(conn, now, &system, &ev)
    }

    pub(crate) fn next_time(&self) -> i64 {
        let now = to_micros(self.clock.now());
        let mut prev = self.last_us.load(Ordering::Relaxed);
        // AUD-3: a step back of more than a second is clock trouble, not jitter; note it for the
        // trail (see record_clock_step). Times handed out stay increasing regardless.
        let previous_reading = self.last_clock_us.swap(now, Ordering::Relaxed);
        if now + CLOCK_STEP_US < previous_reading {
            self.clock_step_back_us.fetch_max(previous_reading - now, Ordering::Relaxed);
        }
        loop {
            let next = now.max(prev + 1);
            match self.last_us.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }
}

fn failure_event(action: Action, rtype: impl Into<String>, id: Option<String>, e: &StoreError) -> AuditEvent {
    AuditEvent::new(action, e.status()).with_target(rtype, id).with_detail(e.issue_code())
}

fn write_action(op: &WriteOp) -> Action {
    match op {
        WriteOp::Create { .. } => Action::Create,
        WriteOp::Update { .. } | WriteOp::ConditionalUpdate { .. } => Action::Update,
        WriteOp::Patch { .. } => Action::Patch,
        WriteOp::Delete { .. } | WriteOp::ConditionalDelete { .. } => Action::Delete,
    }
}

fn outcome_event(action: Action, o: &WriteOutcome) -> Option<AuditEvent> {
    o.record().map(|r| AuditEvent::of_record(action, o.status(), r))
}

fn union_patients(records: &[VersionRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        for p in &r.patients {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
    }
    out
}

impl Store for SqliteStore {
    fn audit_status(&self, ctx: AccessContext) -> StoreFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let path = self.inner.audit_path.clone();
            let result = tokio::task::spawn_blocking(move || crate::audit_log::AuditLogReader::open(&path)?.coverage())
                .await
                .map_err(StoreError::internal)
                .and_then(|r| r);
            let status = result.as_ref().map(|_| 200).unwrap_or_else(|e| e.status());
            self.audit(ctx, AuditEvent::new(Action::Status, status)).await?;
            result
        })
    }

    fn review(&self, ctx: AccessContext, query: crate::audit_log::ReviewQuery) -> StoreFuture<'_, serde_json::Value> {
        self.review_now(ctx, query)
    }

    fn authenticate(&self, token: TokenHash) -> StoreFuture<'_, Option<Principal>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let now = to_micros(inner.clock.now());
            let row: Option<(String, String, Option<i64>)> = inner.engine.read_now(move |c| {
                Ok(c.prepare_cached(
                    "SELECT a.name, a.role, t.last_used_us FROM api_token t JOIN account a ON a.name = t.account \
                         WHERE t.hash = ?1 AND t.expires_us > ?2 AND a.disabled_us IS NULL AND a.role != 'patient'",
                )?
                .query_row(params![&token.0[..], now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?)
            })?;
            let Some((account, role, last_used)) = row else { return Ok(None) };
            let Ok(role) = role.parse::<Role>() else { return Ok(None) };
            // AUTH-7: token use counts as use of the account; written at most once a minute.
            if last_used.is_none_or(|l| now - l >= crate::identity::TOUCH_EVERY_US) {
                let name = account.clone();
                inner
                    .engine
                    .write(move |c| {
                        c.prepare_cached("UPDATE api_token SET last_used_us = ?1 WHERE hash = ?2")?
                            .execute(params![now, &token.0[..]])?;
                        c.prepare_cached("UPDATE account SET last_used_us = ?1 WHERE name = ?2")?
                            .execute(params![now, name])?;
                        Ok(())
                    })
                    .await?;
            }
            Ok(Some(Principal { account, role }))
        })
    }

    fn record_event(&self, ctx: AccessContext, event: AuditEvent) -> StoreFuture<'_, ()> {
        Box::pin(self.audit(ctx, event))
    }

    fn read(
        &self,
        ctx: AccessContext,
        rtype: ResourceType,
        id: String,
        version: Option<u64>,
    ) -> StoreFuture<'_, VersionRecord> {
        Box::pin(async move {
            let inner = Arc::clone(&self.inner);
            let lookup_id = id.clone();
            let hidden = crate::category::Visibility::of(&ctx.rights);
            let found = self.inner.engine.read_now(move |c| {
                // ACL-3: a resource in a category the caller may not view does not exist for them.
                let Some(v) = version else {
                    return Ok(
                        match rows::load_current_visible(c, &inner.keys, inner.protect, rtype, &lookup_id, &hidden)? {
                            rows::Current::Missing => Ok(None),
                            rows::Current::Hidden => Err(()),
                            rows::Current::Found(r) => Ok(Some(r)),
                        },
                    );
                };
                if crate::category::is_invisible(c, &hidden, rtype.as_str(), &lookup_id, version)? {
                    return Ok(Err(()));
                }
                Ok(Ok(rows::load_version(c, &inner.keys, inner.protect, rtype, &lookup_id, v)?))
            });
            let mut hidden_by_policy = false;
            let found = found.map(|r| {
                r.unwrap_or_else(|()| {
                    hidden_by_policy = true;
                    None
                })
            });
            let what = || match version {
                None => format!("{rtype}/{id}"),
                Some(v) => format!("{rtype}/{id}/_history/{v}"),
            };
            let result = found.and_then(|r| match r {
                None => Err(StoreError::NotFound(what())),
                Some(r) if r.deleted => Err(StoreError::Gone { what: what(), version: r.version }),
                Some(r) => Ok(r),
            });
            let action = if version.is_some() { Action::Vread } else { Action::Read };
            let ev = match &result {
                Ok(r) => AuditEvent::of_record(action, 200, r),
                // The client sees a plain 404; the trail records why.
                Err(e) if hidden_by_policy => AuditEvent::new(action, e.status())
                    .with_target(rtype.as_str(), Some(id.clone()))
                    .with_detail("hidden-by-policy"),
                Err(e) => failure_event(action, rtype.as_str(), Some(id.clone()), e),
            };
            self.audit(ctx, ev).await?;
            result
        })
    }

    fn history(&self, ctx: AccessContext, scope: HistoryScope, q: HistoryQuery) -> StoreFuture<'_, Page> {
        Box::pin(async move {
            let inner = Arc::clone(&self.inner);
            let s = scope.clone();
            let hidden = crate::category::Visibility::of(&ctx.rights);
            let result = self.inner.engine.read(move |c| history_page(c, &inner, &s, &q, &hidden)).await;
            let (action, rtype, rid) = match &scope {
                HistoryScope::System => (Action::HistorySystem, None, None),
                HistoryScope::Type(t) => (Action::HistoryType, Some(t.to_string()), None),
                HistoryScope::Instance(t, id) => (Action::HistoryInstance, Some(t.to_string()), Some(id.clone())),
            };
            let mut ev = match &result {
                Ok(page) => {
                    let mut ev = AuditEvent::new(action, 200);
                    ev.patients = union_patients(&page.records);
                    ev
                }
                Err(e) => AuditEvent::new(action, e.status()).with_detail(e.issue_code()),
            };
            ev.rtype = rtype;
            ev.rid = rid;
            self.audit(ctx, ev).await?;
            result
        })
    }

    fn search(&self, ctx: AccessContext, rtype: ResourceType, mut q: SearchQuery) -> StoreFuture<'_, Page> {
        Box::pin(async move {
            q.rtype = rtype;
            let inner = Arc::clone(&self.inner);
            let now_us = to_micros(self.inner.clock.now());
            let hidden = crate::category::Visibility::of(&ctx.rights);
            let result = self
                .inner
                .engine
                .read(move |c| {
                    let sctx = search::sql::Ctx {
                        conn: c,
                        keys: &inner.keys,
                        index: &inner.index,
                        protect: inner.protect,
                        now_us,
                        hidden: &hidden,
                        versions: &inner.versions,
                    };
                    let r = search::sql::run(&sctx, &q)?;
                    Ok(Page {
                        records: r.matches,
                        included: r.included,
                        next_cursor: r.next.map(|c| c.encode()),
                        previous_cursor: r.previous.map(|c| c.encode()),
                        total: r.total,
                    })
                })
                .await;
            let ev = match &result {
                Ok(page) => {
                    let mut ev = AuditEvent::new(Action::Search, 200).with_target(rtype.as_str(), None);
                    // What was disclosed: every patient whose data is in the page, includes too.
                    let mut all = union_patients(&page.records);
                    all.extend(union_patients(&page.included));
                    all.sort();
                    all.dedup();
                    ev.patients = all;
                    ev
                }
                Err(e) => failure_event(Action::Search, rtype.as_str(), None, e),
            };
            self.audit(ctx, ev).await?;
            result
        })
    }

    fn write(&self, ctx: AccessContext, op: WriteOp) -> StoreFuture<'_, WriteOutcome> {
        let action = write_action(&op);
        let rtype = op.rtype();
        let target = op.target_id().map(str::to_string);
        Box::pin(self.write_audited(
            ctx,
            move |tx| tx.apply(op),
            |_| true,
            move |result| {
                vec![match result {
                    Ok(o) => outcome_event(action, o)
                        .unwrap_or_else(|| AuditEvent::new(action, o.status()).with_target(rtype.as_str(), target)),
                    Err(e) => failure_event(action, rtype.as_str(), target, e),
                }]
            },
        ))
    }

    fn bundle(
        &self,
        ctx: AccessContext,
        kind: BundleKind,
        entries: Vec<RequestEntry>,
    ) -> StoreFuture<'_, Result<Vec<EntryResult>, TransactionError>> {
        let limits = self.inner.limits;
        let action = match kind {
            BundleKind::Transaction => Action::Transaction,
            BundleKind::Batch => Action::Batch,
        };
        Box::pin(async move {
            let outcome = self
                .write_audited(
                    ctx,
                    move |tx| Ok(bundle::run(tx, kind, entries, limits)),
                    |outcome| outcome.is_ok(),
                    move |result| bundle_events(action, result),
                )
                .await?;
            Ok(outcome)
        })
    }
}

impl SqliteStore {
    fn review_now(
        &self,
        ctx: AccessContext,
        query: crate::audit_log::ReviewQuery,
    ) -> StoreFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let path = self.inner.audit_path.clone();
            let mut q = query.clone();
            // The flagged patients live in the records; the view runs on the audit file.
            let prepared = match &mut q {
                crate::audit_log::ReviewQuery::Flagged { flagged, .. } => {
                    self.inner.engine.read_now(crate::flags::all).map(|f| *flagged = f)
                }
                _ => Ok(()),
            };
            let result = match prepared {
                Err(e) => Err(e),
                Ok(()) => tokio::task::spawn_blocking(move || {
                    let reader = crate::audit_log::AuditLogReader::open(&path)?;
                    q.run(&reader)
                })
                .await
                .map_err(StoreError::internal)
                .and_then(|r| r),
            };
            let target = match &query {
                crate::audit_log::ReviewQuery::Account { account, .. } => Some(account.clone()),
                crate::audit_log::ReviewQuery::Patient { patient, .. } => Some(patient.clone()),
                _ => None,
            };
            let status = result.as_ref().map(|_| 200).unwrap_or_else(|e| e.status());
            let ev =
                AuditEvent::new(Action::AuditReview, status).with_target("audit", target).with_detail(query.kind());
            self.audit(ctx, ev).await?;
            result
        })
    }
}

fn bundle_events(
    action: Action,
    result: &Result<Result<Vec<EntryResult>, TransactionError>, StoreError>,
) -> Vec<AuditEvent> {
    match result {
        Ok(Ok(entries)) => {
            let mut events: Vec<AuditEvent> = entries
                .iter()
                .map(|e| match e {
                    EntryResult::Write(o) => {
                        let a = match o {
                            WriteOutcome::Created(_) => Action::Create,
                            WriteOutcome::Existing(_) => Action::Read,
                            WriteOutcome::Updated(_) => Action::Update,
                            WriteOutcome::Deleted(_) => Action::Delete,
                        };
                        outcome_event(a, o).unwrap_or_else(|| AuditEvent::new(a, o.status()))
                    }
                    EntryResult::Read(r) => AuditEvent::of_record(Action::Read, 200, r),
                    EntryResult::Search { rtype, records, .. } => {
                        let mut ev = AuditEvent::new(Action::Search, 200).with_target(rtype.as_str(), None);
                        ev.patients = union_patients(records);
                        ev
                    }
                    EntryResult::Failed(e) => AuditEvent::new(action, e.status()).with_detail(e.issue_code()),
                })
                .collect();
            events.push(AuditEvent::new(action, 200).with_detail(format!("{} entries", entries.len())));
            events
        }
        Ok(Err(te)) => vec![AuditEvent::new(action, te.error.status()).with_detail(format!(
            "entry {}: {}",
            te.entry,
            te.error.issue_code()
        ))],
        Err(e) => vec![AuditEvent::new(action, e.status()).with_detail(e.issue_code())],
    }
}

fn history_page(
    c: &Connection,
    inner: &Inner,
    scope: &HistoryScope,
    q: &HistoryQuery,
    hidden: &crate::category::Visibility,
) -> Result<Page, StoreError> {
    use rusqlite::types::Value as SqlValue;
    let mut sql = format!("SELECT {VERSION_COLUMNS} FROM resource_version v WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    // ACL-3: versions of resources the caller may not view are left out (and counted out).
    sql.push_str(&crate::category::history_filter(hidden, &mut args));
    let mut total = None;
    match scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => {
            sql.push_str(" AND v.rtype = ?");
            args.push(SqlValue::Text(t.to_string()));
        }
        HistoryScope::Instance(t, id) => {
            let mut count_args = vec![SqlValue::Text(t.to_string()), SqlValue::Text(id.clone())];
            let filter = crate::category::history_filter(hidden, &mut count_args);
            let count: i64 = c
                .prepare_cached(&format!(
                    "SELECT count(*) FROM resource_version v WHERE v.rtype = ? AND v.id = ?{filter}"
                ))?
                .query_row(rusqlite::params_from_iter(count_args), |r| r.get(0))?;
            if count == 0 {
                return Err(StoreError::NotFound(format!("{t}/{id}")));
            }
            total = Some(count as u64);
            sql.push_str(" AND v.rtype = ? AND v.id = ?");
            args.push(SqlValue::Text(t.to_string()));
            args.push(SqlValue::Text(id.clone()));
        }
    }
    if let Some(since) = q.since_us {
        // Times increase with seq (see Inner::next_time), so _since is a seq bound found by index.
        sql.push_str(
            " AND v.seq >= COALESCE((SELECT seq FROM resource_version WHERE last_updated_us >= ? \
             ORDER BY last_updated_us LIMIT 1), 9223372036854775807)",
        );
        args.push(SqlValue::Integer(since));
    }
    if let Some(before) = q.before_seq {
        sql.push_str(" AND v.seq < ?");
        args.push(SqlValue::Integer(before));
    }
    sql.push_str(" ORDER BY v.seq DESC LIMIT ?");
    args.push(SqlValue::Integer(q.count as i64 + 1));
    let sealed: Vec<SealedRow> = c
        .prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(args), SealedRow::from_row)?
        .collect::<Result<_, _>>()?;
    let more = sealed.len() > q.count;
    let mut records = Vec::with_capacity(sealed.len().min(q.count));
    let mut last_seq = None;
    for row in sealed.into_iter().take(q.count) {
        last_seq = Some(row.seq);
        records.push(rows::open_row(c, &inner.keys, inner.protect, &row)?);
    }
    Ok(Page {
        records,
        included: Vec::new(),
        next_cursor: if more { last_seq.map(|s| s.to_string()) } else { None },
        previous_cursor: None,
        total,
    })
}
