//! One writer thread with group commit, and a small pool of reader connections.
//!
//! SQLite allows one writer at a time; rather than contend for the lock, every write (including
//! the audit rows of reads) is a job sent to a dedicated thread that runs whatever jobs are
//! waiting inside one transaction and commits once. Each job runs in its own savepoint, so one
//! failing job rolls back alone; callers hear back only after the commit is durable.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::audit_index::{IndexerThread, Nudge};
use crate::schema;
use crate::sealer::Sealer;
use crate::search::runs::{IndexRuns, Maintainer};

/// Upper bound on jobs per commit: keeps latency bounded under a flood of writes.
const MAX_BATCH: usize = 512;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Builds the sealer on the writer's connection when the engine starts.
pub(crate) type MakeSealer = Box<dyn FnOnce(&Connection) -> Result<Sealer, StoreError> + Send>;
/// A job returns its completion and whether it poisons the group (must not be committed).
type Job = Box<dyn FnOnce(&Connection) -> (Completion, bool) + Send>;

pub(crate) struct Engine {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    audit_indexer: Mutex<Option<IndexerThread>>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl Engine {
    /// `sealer`, if given, runs on the writer thread after every commit (and on a timer).
    /// `records` and `audit` are the two database files, already migrated. The writer opens the
    /// audit file as `main` and attaches the records as `rec` (see schema.rs for why).
    pub(crate) fn open(
        records: &Path,
        audit: &Path,
        synchronous_full: bool,
        sealer: Option<MakeSealer>,
        index_runs: IndexRuns,
    ) -> Result<Engine, StoreError> {
        let conn = open_writer(records, audit, synchronous_full)?;
        // WAL checkpoints run on their own connection and thread, not inside a writer's commit.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
        let checkpointer = start_checkpointer(records, audit)?;
        let sealer = sealer.map(|make| make(&conn)).transpose()?;
        let audit_indexer = IndexerThread::start(audit)?;
        let nudge = audit_indexer.nudge();
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("mamori-writer".into())
            .spawn(move || writer_loop(conn, rx, sealer, index_runs, nudge))
            .map_err(StoreError::internal)?;
        Ok(Engine {
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            audit_indexer: Mutex::new(Some(audit_indexer)),
            readers: Mutex::new(Vec::new()),
            path: records.to_path_buf(),
        })
    }

    /// Runs `f` on the writer; resolves once its group transaction has committed.
    ///
    /// Jobs run without a savepoint of their own (nested savepoints made SQLite copy every
    /// touched page into its statement journal — a third of the writer's time): a job that
    /// fails part-way must undo its own changes (see [`savepoint`]). A job that reports
    /// [`StoreError::AuditUnavailable`] may have left data without its audit row, so it fails the
    /// whole group: nothing of that commit is kept (AUD-1, fail closed).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let poisons = matches!(result, Err(StoreError::AuditUnavailable));
            let done: Completion = Box::new(move |committed: Result<(), StoreError>| {
                let _ = tx.send(committed.and(result));
            });
            (done, poisons)
        });
        let sender = self.jobs.lock().map_err(StoreError::internal)?.clone();
        sender
            .ok_or_else(|| StoreError::internal("store is shut down"))?
            .send(job)
            .map_err(|_| StoreError::internal("writer thread has stopped"))?;
        rx.await.map_err(|_| StoreError::internal("writer thread dropped a job"))?
    }

    /// Runs `f` on a reader connection on the blocking pool.
    pub(crate) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.read_blocking(f)).await.map_err(StoreError::internal)?
    }

    /// Runs a point query (a few pages, microseconds) on a pooled reader without leaving the
    /// calling thread: a hop to the blocking pool costs more than the query itself.
    pub(crate) fn read_now<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.read_blocking(f)
    }

    pub(crate) fn read_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().map_err(StoreError::internal)?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            pool.push(conn);
        }
        result
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        schema::configure_reader(&conn)?;
        Ok(conn)
    }

    /// Stops the writer after it has drained its queue.
    pub(crate) fn shutdown(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        if let Some((stop, h)) = checkpointer {
            drop(stop);
            let _ = h.join();
        }
        if let Some(indexer) = self.audit_indexer.lock().ok().and_then(|mut i| i.take()) {
            indexer.stop();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `f` inside a savepoint; keeps its changes only if it succeeds and `keep` agrees.
pub(crate) fn savepoint_keeping<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    keep: fn(&T) -> bool,
) -> Result<Result<T, StoreError>, StoreError> {
    conn.execute_batch("SAVEPOINT data")?;
    let result = f(conn);
    if matches!(&result, Ok(v) if keep(v)) {
        conn.execute_batch("RELEASE data")?;
    } else {
        conn.execute_batch("ROLLBACK TO data; RELEASE data")?;
    }
    Ok(result)
}

/// Runs `f` inside a named savepoint: released on success, rolled back on error.
pub(crate) fn savepoint<T>(
    conn: &Connection,
    name: &str,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch(&format!("SAVEPOINT {name}"))?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch(&format!("RELEASE {name}"))?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))?;
            Err(e)
        }
    }
}

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The audit file as `main`, the records attached as `rec`: SQLite commits `main` first.
pub(crate) fn open_writer(records: &Path, audit: &Path, synchronous_full: bool) -> Result<Connection, StoreError> {
    let conn = Connection::open(audit)?;
    let records = records.to_str().ok_or_else(|| StoreError::Setup("the database path is not UTF-8".into()))?;
    conn.execute("ATTACH DATABASE ?1 AS rec", [records])?;
    schema::configure(&conn, "main", synchronous_full)?;
    schema::configure(&conn, "rec", synchronous_full)?;
    // Statement journals in a file, not in memory: inside the bundle savepoint every statement
    // (e.g. the INSERT into resource_version, which has triggers) opens a statement journal and
    // closing it truncates the savepoint's sub-journal; an in-memory journal truncates by walking
    // its chunk list from the start, so each statement cost O(pages dirtied so far in the bundle)
    // (76 % of the writer in a 500-entry-bundle ingest). Files spill only past 64 KiB and
    // truncate with one syscall.
    conn.execute_batch("PRAGMA temp_store = FILE")?;
    Ok(conn)
}

fn start_checkpointer(
    records: &Path,
    audit: &Path,
) -> Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>), StoreError> {
    // Without a schema name, wal_checkpoint covers every attached database.
    let conn = open_writer(records, audit, true)?;
    let wals = [wal_path(records), wal_path(audit)];
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("mamori-checkpoint".into())
        .spawn(move || {
            // PASSIVE never blocks the writer or readers; it copies what it can. Under sustained
            // writes the WAL is never found idle, so it would only grow (3 GB for a 0.5 GB
            // database in the search benchmark): past WAL_RESTART_BYTES a RESTART checkpoint
            // waits for readers, copies everything, and lets the next write start the WAL anew.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(CHECKPOINT_EVERY) {
                let mode = if wal_bytes(&wals) > WAL_RESTART_BYTES { "TRUNCATE" } else { "PASSIVE" };
                if let Err(e) = conn.execute_batch(&format!("PRAGMA wal_checkpoint({mode})")) {
                    tracing::warn!(error = %e, mode, "WAL checkpoint failed");
                }
            }
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
        })
        .map_err(StoreError::internal)?;
    Ok((stop_tx, handle))
}

/// WAL size (both files together) beyond which the checkpointer restarts the log.
const WAL_RESTART_BYTES: u64 = 64 << 20;

fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

fn wal_bytes(wals: &[std::path::PathBuf]) -> u64 {
    wals.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

/// How often an idle writer wakes to let the sealer make time-based checkpoints.
const SEAL_TICK: std::time::Duration = std::time::Duration::from_secs(1);

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    mut sealer: Option<Sealer>,
    index_runs: IndexRuns,
    audit_index: Nudge,
) {
    let mut runs = Maintainer::default();
    loop {
        let first = match rx.recv_timeout(SEAL_TICK) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(s) = sealer.as_mut() {
                    s.after_commit(&conn, false);
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the jobs unanswered makes each caller fail with an error.
            tracing::error!(error = %e, "writer could not begin a transaction");
            drop(batch);
            continue;
        }
        let mut poisoned = false;
        let completions: Vec<Completion> = batch
            .into_iter()
            .map(|job| {
                let (done, poisons) = job(&conn);
                poisoned |= poisons;
                done
            })
            .collect();
        if !poisoned {
            // The token index's runs: seal, merge a step (search/runs.rs). Its own savepoint: a
            // failure leaves the index as it was and the group's jobs untouched.
            if let Err(e) = savepoint(&conn, "runs", |c| runs.maintain(c, &index_runs)) {
                tracing::warn!(error = %e, "search index maintenance failed; retried after the next write");
                runs = Maintainer::default();
            }
        }
        let committed = if poisoned {
            tracing::error!(target: "security", "an audit row could not be written; the whole group is rolled back");
            Err(StoreError::AuditUnavailable)
        } else {
            conn.execute_batch("COMMIT").map_err(StoreError::from)
        };
        if let Err(e) = &committed {
            tracing::error!(error = %e, "group commit failed; every job in the batch fails");
            let _ = conn.execute_batch("ROLLBACK");
        }
        for done in completions {
            done(committed.clone());
        }
        if let Some(s) = sealer.as_mut() {
            s.after_commit(&conn, false);
        }
        // AUD-4's per-patient index follows on its own thread and file (audit_index.rs).
        audit_index.send();
    }
    // Shutdown: seal whatever the last checkpoint does not cover yet.
    if let Some(s) = sealer.as_mut() {
        s.after_commit(&conn, true);
    }
}
