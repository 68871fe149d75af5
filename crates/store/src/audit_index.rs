//! AUD-4's per-patient index of the audit trail ("who accessed this patient"), kept in a file of
//! its own and filled by a thread of its own.
//!
//! Why not in the audit file: a search naming 50 patients adds 50 entries scattered over a
//! B-tree keyed by patient. In the audit file those page writes (and the cold page reads before
//! them) held the writer — and with it the next request's audit commit — for milliseconds.
//! Here the writer only nudges the indexer after each commit; the indexer reads the new rows
//! through a read-only connection (WAL readers never block the writer) and writes its own file.
//!
//! Even on its own thread, a B-tree keyed by patient takes each entry on a different page: 50
//! entries per search meant ~50 page writes per search (and the I/O of a step stalled the audit
//! commits of the requests running beside it). So the index is keyed by bucket first — a bucket
//! being [`BUCKET_ROWS`] consecutive audit rows — and a bucket is indexed only once complete, its
//! entries sorted: every step appends to the end of the tree and writes each page once. A lookup
//! by patient seeks once per bucket (`audit_bucket` lists them); the rows of the bucket still
//! filling are read directly.
//!
//! The index is derived data. The rows' patient lists in `audit_event` are authoritative (the
//! Merkle tree covers them) and are written synchronously with each request; the index adds
//! nothing a review could not compute from them. So the file is written without syncs (a crash
//! may lose its last steps, which are re-derived), backups do not need it, and deleting it only
//! makes the next start rebuild it. A review never depends on how far it has got: the
//! `audit_patient_all` view reads the index up to its mark and the rows after the mark directly.
//!
//! The mark also remembers which row it stopped at (request id and time), so an index that
//! belongs to another trail — an audit file restored from an older backup next to a newer
//! index — is recognised: reviews ignore it and the indexer rebuilds it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;

/// `x/mamori-audit.db` → `x/mamori-audit-index.db`.
pub(crate) fn index_path(audit: &Path) -> PathBuf {
    let stem = audit.file_stem().and_then(|s| s.to_str()).unwrap_or("mamori-audit");
    audit.with_file_name(format!("{stem}-index.db"))
}

/// The index file's schema. Bucket `b` holds the rows with seq in `(b * BUCKET_ROWS, (b + 1) *
/// BUCKET_ROWS]`. `audit_patient_mark` holds one row: the last audit seq indexed (always a bucket
/// boundary) and the last row at or before it that exists, by seq, request id and time (the trail
/// fingerprint described above).
const SCHEMA: &str = r#"
CREATE TABLE audit_patient (
    bucket  INTEGER NOT NULL,
    patient TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (bucket, patient, seq)
) WITHOUT ROWID;
CREATE TRIGGER audit_patient_no_update BEFORE UPDATE ON audit_patient
BEGIN SELECT RAISE(ABORT, 'the audit index is append-only'); END;
CREATE TRIGGER audit_patient_no_delete BEFORE DELETE ON audit_patient
BEGIN SELECT RAISE(ABORT, 'the audit index is append-only'); END;
CREATE TABLE audit_bucket (bucket INTEGER PRIMARY KEY);
CREATE TABLE audit_patient_mark (
    bucket_rows INTEGER NOT NULL,
    upto        INTEGER NOT NULL,
    fp_seq      INTEGER NOT NULL,
    request_id  TEXT,
    recorded_us INTEGER
);
"#;
/// Bumped when SCHEMA changes; an index of another version (or bucket size) is rebuilt (it is
/// derived data).
const SCHEMA_VERSION: i64 = 2;

/// Audit rows per bucket. Smaller buckets make a step (one transaction of the indexer) shorter
/// and the directly-read tail of a review shorter; larger ones make lookups by patient seek
/// fewer times (a trail of 10 million rows has about 20,000 buckets).
pub(crate) const BUCKET_ROWS: i64 = 512;

/// The least time between two looks for complete buckets.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long the indexer waits after a failed step before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// How often an idle indexer looks for rows written while no nudge arrived (e.g. at start).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Patient ids are FHIR ids ([A-Za-z0-9.-]), so the comma list becomes a JSON array safely.
const ROWS_PATIENTS: &str = "json_each('[\"' || replace(e.patients, ',', '\",\"') || '\"]') j WHERE e.patients <> ''";

/// Creates the `audit_patient_all (patient, seq)` view on a connection whose `main` is the audit
/// file: the index (attached read-only as `pidx`) up to its mark plus the rows after it, or —
/// when there is no usable index file — every row's patient list read directly. The CROSS JOIN
/// fixes the plan of a lookup by patient: for each bucket, one seek on (bucket, patient).
pub(crate) fn attach_for_review(conn: &Connection, audit: &Path) -> Result<(), StoreError> {
    let index = index_path(audit);
    let usable = index.exists() && attach_index(conn, &index)? && fingerprint_matches(conn, "pidx", "main")?;
    let direct = format!("SELECT j.value, e.seq FROM main.audit_event e, {ROWS_PATIENTS}");
    let rows = if usable {
        format!(
            "SELECT p.patient, p.seq FROM pidx.audit_bucket b CROSS JOIN pidx.audit_patient p ON p.bucket = b.bucket \
             UNION ALL {direct} AND e.seq > (SELECT upto FROM pidx.audit_patient_mark)"
        )
    } else {
        direct
    };
    conn.execute_batch(&format!("CREATE TEMP VIEW audit_patient_all (patient, seq) AS {rows}"))?;
    Ok(())
}

/// Attaches the index file as `pidx`; false when it is not (yet) an index of this version.
fn attach_index(conn: &Connection, index: &Path) -> Result<bool, StoreError> {
    let path = index.to_str().ok_or_else(|| StoreError::Setup("the audit index path is not UTF-8".into()))?;
    conn.execute("ATTACH DATABASE ?1 AS pidx", [path])?;
    let version: i64 = conn.query_row("PRAGMA pidx.user_version", [], |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        conn.execute_batch("DETACH DATABASE pidx")?;
        return Ok(false);
    }
    Ok(true)
}

/// Whether the index in schema `index` was built from the trail in schema `trail`: it has
/// covered no row yet, or the last row it covered is in the trail with the same request id and
/// time.
fn fingerprint_matches(conn: &Connection, index: &str, trail: &str) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT m.fp_seq = 0 OR EXISTS (SELECT 1 FROM {trail}.audit_event e \
         WHERE e.seq = m.fp_seq AND e.request_id = m.request_id AND e.recorded_us = m.recorded_us) \
         FROM {index}.audit_patient_mark m"
    );
    Ok(conn.query_row(&sql, [], |r| r.get::<_, bool>(0)).optional()?.unwrap_or(false))
}

/// The indexer's connection: the index file read-write (`main`) with the audit file attached
/// as `trail`, which it only reads.
pub(crate) struct Indexer {
    conn: Connection,
    bucket_rows: i64,
}

impl Indexer {
    /// Opens (creating or rebuilding as needed) the index of the trail in `audit`.
    pub(crate) fn open(audit: &Path) -> Result<Indexer, StoreError> {
        Self::open_with(audit, BUCKET_ROWS)
    }

    fn open_with(audit: &Path, bucket_rows: i64) -> Result<Indexer, StoreError> {
        let conn = Connection::open(index_path(audit))?;
        crate::schema::configure(&conn, "main", false)?;
        let trail = audit.to_str().ok_or_else(|| StoreError::Setup("the audit path is not UTF-8".into()))?;
        conn.execute("ATTACH DATABASE ?1 AS trail", [trail])?;
        let indexer = Indexer { conn, bucket_rows };
        let version: i64 = indexer.conn.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
        let usable = version == SCHEMA_VERSION
            && fingerprint_matches(&indexer.conn, "main", "trail")?
            && indexer.conn.query_row("SELECT bucket_rows FROM main.audit_patient_mark", [], |r| r.get::<_, i64>(0))?
                == bucket_rows;
        if !usable {
            if version != 0 {
                tracing::warn!("the per-patient audit index does not match the audit trail; rebuilding it");
            }
            indexer.rebuild()?;
        }
        Ok(indexer)
    }

    fn rebuild(&self) -> Result<(), StoreError> {
        // A savepoint outside a transaction is one: committed on release, rolled back on error.
        crate::engine::savepoint(&self.conn, "rebuild", |conn| {
            conn.execute_batch(
                "DROP TABLE IF EXISTS main.audit_patient; DROP TABLE IF EXISTS main.audit_bucket; \
                 DROP TABLE IF EXISTS main.audit_patient_mark;",
            )?;
            conn.execute_batch(SCHEMA)?;
            conn.execute(
                "INSERT INTO main.audit_patient_mark (bucket_rows, upto, fp_seq) VALUES (?1, 0, 0)",
                [self.bucket_rows],
            )?;
            conn.execute_batch(&format!("PRAGMA main.user_version = {SCHEMA_VERSION}"))?;
            Ok(())
        })
    }

    /// Indexes the next bucket if it is complete; returns whether there was one.
    pub(crate) fn step(&self) -> Result<bool, StoreError> {
        match self.read_bucket()? {
            Some(bucket) => self.write_bucket(&bucket).map(|_| true),
            None => Ok(false),
        }
    }

    /// The next bucket's rows, if the bucket is complete. Read in autocommit, so the write that
    /// follows locks the index file only.
    fn read_bucket(&self) -> Result<Option<Bucket>, StoreError> {
        let conn = &self.conn;
        let upto: i64 = conn.query_row("SELECT upto FROM main.audit_patient_mark", [], |r| r.get(0))?;
        let until = upto + self.bucket_rows;
        // Seqs only grow, from one writer: once a row past the bucket is committed, every row of
        // the bucket is committed too.
        let complete: bool =
            conn.query_row("SELECT EXISTS (SELECT 1 FROM trail.audit_event WHERE seq >= ?1)", [until], |r| r.get(0))?;
        if !complete {
            return Ok(None);
        }
        let mut rows = conn.prepare_cached(
            "SELECT seq, patients, request_id, recorded_us FROM trail.audit_event WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = rows
            .query_map(params![upto, until], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Bucket { upto, until, rows }))
    }

    /// Writes a bucket's entries in key order and moves the mark past it; returns whether it did
    /// (false: another indexer of the same trail got there first).
    fn write_bucket(&self, b: &Bucket) -> Result<bool, StoreError> {
        let mut entries: Vec<(&str, i64)> = b
            .rows
            .iter()
            .flat_map(|(seq, patients, _, _)| patients.split(',').filter(|p| !p.is_empty()).map(move |p| (p, *seq)))
            .collect();
        entries.sort_unstable();
        entries.dedup();
        let bucket = b.upto / self.bucket_rows;
        crate::engine::savepoint(&self.conn, "bucket", |conn| {
            // The mark moves first, and only from where the bucket was read: that write takes the
            // file's lock, so a second process indexing the same trail (a CLI command beside the
            // server) finds the bucket taken and leaves it, rather than failing on its keys.
            let (fp_seq, request, us) = match b.rows.last() {
                Some((seq, _, request, us)) => (Some(*seq), Some(request.as_str()), Some(*us)),
                None => (None, None, None),
            };
            let moved = conn
                .prepare_cached(
                    // No row in the whole bucket (seqs skipped): the fingerprint stays on the last row.
                    "UPDATE main.audit_patient_mark SET upto = ?2, fp_seq = coalesce(?3, fp_seq), \
                     request_id = coalesce(?4, request_id), recorded_us = coalesce(?5, recorded_us) WHERE upto = ?1",
                )?
                .execute(params![b.upto, b.until, fp_seq, request, us])?;
            if moved == 0 {
                return Ok(false);
            }
            let mut idx =
                conn.prepare_cached("INSERT INTO main.audit_patient (bucket, patient, seq) VALUES (?1, ?2, ?3)")?;
            for (patient, seq) in &entries {
                idx.execute(params![bucket, patient, seq])?;
            }
            conn.prepare_cached("INSERT INTO main.audit_bucket (bucket) VALUES (?1)")?.execute([bucket])?;
            Ok(true)
        })
    }

    /// Steps until the index has caught up with the trail.
    fn catch_up(&self) -> Result<(), StoreError> {
        while self.step()? {}
        Ok(())
    }
}

/// The audit rows of one complete bucket: (seq, patients, request id, time).
struct Bucket {
    upto: i64,
    until: i64,
    rows: Vec<(i64, String, String, i64)>,
}

/// What the writer sends the indexer.
enum Signal {
    /// New audit rows were committed.
    Nudge,
    Stop,
}

/// The running indexer thread.
pub(crate) struct IndexerThread {
    signals: mpsc::SyncSender<Signal>,
    handle: std::thread::JoinHandle<()>,
}

/// A cheap handle the writer nudges after each commit.
#[derive(Clone)]
pub(crate) struct Nudge(mpsc::SyncSender<Signal>);

impl Nudge {
    /// Never blocks: a nudge already waiting covers this one too.
    pub(crate) fn send(&self) {
        let _ = self.0.try_send(Signal::Nudge);
    }
}

impl IndexerThread {
    pub(crate) fn start(audit: &Path) -> Result<IndexerThread, StoreError> {
        let indexer = Indexer::open(audit)?;
        let (signals, rx) = mpsc::sync_channel::<Signal>(1);
        let handle = std::thread::Builder::new()
            .name("mamori-audit-index".into())
            .spawn(move || run(indexer, rx))
            .map_err(StoreError::internal)?;
        Ok(IndexerThread { signals, handle })
    }

    pub(crate) fn nudge(&self) -> Nudge {
        Nudge(self.signals.clone())
    }

    pub(crate) fn stop(self) {
        let _ = self.signals.send(Signal::Stop);
        let _ = self.handle.join();
    }
}

/// The indexer's niceness. Its work is never on a request's path, and on a small machine its
/// bursts (a bucket of searches naming 50 patients each is ~25,000 entries) would otherwise take
/// a core from the requests running beside it. Under CPU saturation it still gets a small share;
/// if it falls behind, reviews read more rows directly, which is slower but never incomplete.
const NICENESS: i32 = 19;

fn lower_own_priority() {
    // On Linux, PRIO_PROCESS with a thread id sets that thread's niceness alone.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), NICENESS) {
        tracing::debug!(error = %e, "could not lower the audit indexer's priority");
    }
}

fn run(indexer: Indexer, rx: mpsc::Receiver<Signal>) {
    lower_own_priority();
    loop {
        // A failing step (a full disk, say) is retried after a pause, not on every nudge: the
        // log gets one line per RETRY_AFTER, and reviews read the unindexed rows meanwhile.
        let pause = match indexer.catch_up() {
            Ok(()) => CHECK_INTERVAL,
            Err(e) => {
                tracing::warn!(error = %e, "per-patient audit index step failed; retried later");
                RETRY_AFTER
            }
        };
        // Nudges come with every commit, thousands a second; a bucket fills far slower. Look
        // again only after the pause (nudges meanwhile are covered by that look), then when
        // something new is committed or the idle tick passes.
        let next_check = Instant::now() + pause;
        let mut nudged = false;
        while let Some(wait) = next_check.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(wait) {
                Ok(Signal::Nudge) => nudged = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(Signal::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if !nudged && !matches!(rx.recv_timeout(IDLE_TICK), Ok(Signal::Nudge) | Err(mpsc::RecvTimeoutError::Timeout)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccessContext, Action, AuditEvent};
    use rusqlite::OpenFlags;

    fn trail(dir: &Path) -> (PathBuf, Connection) {
        let audit = dir.join("mamori-audit.db");
        let conn = Connection::open(&audit).unwrap();
        crate::schema::configure(&conn, "main", false).unwrap();
        crate::schema::migrate(&conn, crate::schema::Db::Audit).unwrap();
        (audit, conn)
    }

    fn append(conn: &Connection, request: &str, patients: &[&str]) {
        let ctx = AccessContext::operator(request, "ops");
        let mut ev = AuditEvent::new(Action::Search, 200);
        ev.patients = patients.iter().map(|p| p.to_string()).collect();
        crate::audit::append(conn, 1, &ctx, &ev).unwrap();
    }

    fn patient_seqs(audit: &Path, patient: &str) -> Vec<i64> {
        let conn = Connection::open_with_flags(audit, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        attach_for_review(&conn, audit).unwrap();
        let mut stmt = conn.prepare("SELECT seq FROM audit_patient_all WHERE patient = ?1 ORDER BY seq").unwrap();
        stmt.query_map([patient], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn indexed(audit: &Path) -> i64 {
        let conn = Connection::open(index_path(audit)).unwrap();
        conn.query_row("SELECT count(*) FROM audit_patient", [], |r| r.get(0)).unwrap()
    }

    /// AUD-4: a review finds every row naming a patient exactly once — with no index file, before
    /// the index has caught up, and after; rows of the bucket still filling are read directly.
    #[test]
    fn aud4_patient_rows_are_found_once_before_and_after_indexing() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, conn) = trail(dir.path());
        for (i, patients) in [&["p1", "p2"][..], &[], &["p2"], &["p1", "p3"]].into_iter().enumerate() {
            append(&conn, &format!("r{i}"), patients);
        }
        let expect = |audit: &Path| {
            assert_eq!(patient_seqs(audit, "p1"), [1, 4]);
            assert_eq!(patient_seqs(audit, "p2"), [1, 3]);
            assert_eq!(patient_seqs(audit, "p3"), [4]);
            assert!(patient_seqs(audit, "p4").is_empty());
        };
        expect(&audit);
        let indexer = Indexer::open_with(&audit, 2).unwrap();
        expect(&audit);
        assert!(indexer.step().unwrap());
        expect(&audit);
        assert!(indexer.step().unwrap());
        assert!(!indexer.step().unwrap(), "no complete bucket left");
        assert_eq!(indexed(&audit), 5);
        expect(&audit);
        // Row 5 opens a bucket that is not complete yet: read directly.
        append(&conn, "r4", &["p3"]);
        assert!(!indexer.step().unwrap());
        assert_eq!(patient_seqs(&audit, "p3"), [4, 5]);
        append(&conn, "r5", &[]);
        assert!(indexer.step().unwrap());
        assert_eq!(indexed(&audit), 6);
        assert_eq!(patient_seqs(&audit, "p3"), [4, 5]);
    }

    /// A lookup by patient seeks once per bucket instead of scanning the index.
    #[test]
    fn a_lookup_by_patient_seeks_each_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, conn) = trail(dir.path());
        for i in 0..8 {
            append(&conn, &format!("r{i}"), &["p1"]);
        }
        Indexer::open_with(&audit, 2).unwrap().catch_up().unwrap();
        let reader = Connection::open_with_flags(&audit, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        attach_for_review(&reader, &audit).unwrap();
        let mut plan =
            reader.prepare("EXPLAIN QUERY PLAN SELECT seq FROM audit_patient_all WHERE patient = 'p1'").unwrap();
        let steps: Vec<String> = plan.query_map([], |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(steps.iter().any(|s| s.contains("USING PRIMARY KEY (bucket=? AND patient=?)")), "plan: {steps:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// AUD-4: whatever the rows, the bucket size and how far the index has got, the view
        /// lists exactly the (patient, row) pairs the rows' patient lists name.
        #[test]
        fn aud4_the_view_equals_the_rows_patient_lists(
            rows in proptest::collection::vec(proptest::collection::vec(0u8..6, 0..4), 0..40),
            bucket_rows in 1i64..6,
            steps in 0usize..12,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (audit, conn) = trail(dir.path());
            let mut expected: Vec<(String, i64)> = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                let mut names: Vec<String> = row.iter().map(|p| format!("p{p}")).collect();
                names.sort();
                names.dedup();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                append(&conn, &format!("r{i}"), &refs);
                expected.extend(names.into_iter().map(|n| (n, i as i64 + 1)));
            }
            expected.sort();
            let indexer = Indexer::open_with(&audit, bucket_rows).unwrap();
            for _ in 0..steps {
                indexer.step().unwrap();
            }
            let reader = Connection::open_with_flags(&audit, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            attach_for_review(&reader, &audit).unwrap();
            let mut all = reader.prepare("SELECT patient, seq FROM audit_patient_all ORDER BY patient, seq").unwrap();
            let seen: Vec<(String, i64)> =
                all.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
            proptest::prop_assert_eq!(seen, expected);
        }
    }

    /// AUD-4: an index built from another trail (an audit file restored from an older backup
    /// beside a newer index) is never trusted by a review, and the indexer rebuilds it.
    #[test]
    fn aud4_an_index_of_another_trail_is_ignored_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, conn) = trail(dir.path());
        append(&conn, "a1", &["p1"]);
        append(&conn, "a2", &["p2"]);
        Indexer::open_with(&audit, 1).unwrap().catch_up().unwrap();
        assert_eq!(indexed(&audit), 2);
        drop(conn);
        // The "restored" trail: different rows under the same seqs.
        for f in ["mamori-audit.db", "mamori-audit.db-wal", "mamori-audit.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let (audit, conn) = trail(dir.path());
        append(&conn, "b1", &["p3"]);
        append(&conn, "b2", &["p3"]);
        assert!(patient_seqs(&audit, "p1").is_empty());
        assert_eq!(patient_seqs(&audit, "p3"), [1, 2]);
        let indexer = Indexer::open_with(&audit, 1).unwrap();
        assert_eq!(indexed(&audit), 0);
        indexer.catch_up().unwrap();
        assert_eq!(indexed(&audit), 2);
        assert!(patient_seqs(&audit, "p1").is_empty());
        assert_eq!(patient_seqs(&audit, "p3"), [1, 2]);
    }

    /// Two processes indexing one trail (the server and a CLI command) never index a bucket twice
    /// and never fail on it.
    #[test]
    fn two_indexers_on_one_trail_share_the_work() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, conn) = trail(dir.path());
        for i in 0..6 {
            append(&conn, &format!("r{i}"), &["p1", "p2"]);
        }
        let (a, b) = (Indexer::open_with(&audit, 2).unwrap(), Indexer::open_with(&audit, 2).unwrap());
        // Both read the first bucket; the first to write takes it, the second leaves it.
        let (first_a, first_b) = (a.read_bucket().unwrap().unwrap(), b.read_bucket().unwrap().unwrap());
        assert!(a.write_bucket(&first_a).unwrap());
        assert!(!b.write_bucket(&first_b).unwrap());
        assert_eq!(indexed(&audit), 4);
        assert!(b.step().unwrap());
        a.catch_up().unwrap();
        b.catch_up().unwrap();
        assert_eq!(indexed(&audit), 12);
        assert_eq!(patient_seqs(&audit, "p2"), [1, 2, 3, 4, 5, 6]);
    }

    /// The indexer thread catches up after a nudge and stops promptly.
    #[test]
    fn the_indexer_thread_follows_nudges_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (audit, conn) = trail(dir.path());
        let thread = IndexerThread::start(&audit).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..BUCKET_ROWS {
            append(&conn, &format!("r{i}"), &["p1"]);
        }
        conn.execute_batch("COMMIT").unwrap();
        thread.nudge().send();
        let deadline = Instant::now() + Duration::from_secs(10);
        while indexed(&audit) < BUCKET_ROWS {
            assert!(Instant::now() < deadline, "the indexer did not catch up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        thread.stop();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
