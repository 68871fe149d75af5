//! The offline verifier: stream the log once, in order, and compare it with signed checkpoints.
//!
//! See the crate documentation for what is detected and how findings are classified.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use crate::AuditError;
use crate::checkpoint::{self, VerifierKey};
use crate::entry::AuditEntry;
use crate::merkle::{self, EMPTY_ROOT, Hash, TreeBuilder};

/// A signed checkpoint note, as stored (C2SP signed-note text).
pub type SignedCheckpointText = String;

/// Where a checkpoint came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointSource {
    /// Stored with the log (e.g. a checkpoint table in the same database).
    Log,
    /// Witnessed outside the log (e.g. an append-only file, another machine, paper).
    Witnessed,
}

impl fmt::Display for CheckpointSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointSource::Log => "log",
            CheckpointSource::Witnessed => "witnessed",
        })
    }
}

/// What is wrong. "Position" is the 1-based place of an entry in the order it was read; in
/// an intact log, position = seq.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// Entries `seq ..= seq + count - 1` are missing; the log jumps from `after_seq` past them.
    Deleted { after_seq: u64, count: u64 },
    /// `count` entries from `seq` on repeat sequence numbers already seen (duplicated or
    /// forged rows); they appear after the log had reached `after_seq`.
    Inserted { after_seq: u64, count: u64 },
    /// Entries `seq ..= seq + count - 1` appear late: after the log had already reached
    /// `after_seq` (a swap of two adjacent entries is one `Reordered` of count 1).
    Reordered { after_seq: u64, count: u64 },
    /// Entry `seq` is recorded earlier than the entry before it.
    TimeWentBackwards { previous_us: i64, recorded_us: i64 },
    /// The root of the first `size` entries differs from a validly signed checkpoint: some
    /// entry at positions `last_good_size + 1 ..= size` was altered, inserted, deleted or
    /// moved (`last_good_size` is the largest smaller checkpoint size that matched, or 0).
    CheckpointMismatch { size: u64, source: CheckpointSource, last_good_size: u64 },
    /// The log has `log_size` entries but a checkpoint vouches for `checkpoint_size`: the tail
    /// was cut off (`seq` is the first missing one).
    Truncated { checkpoint_size: u64, log_size: u64 },
    /// Two validly signed checkpoints cannot both describe one append-only log: the same
    /// size with different roots, or the log matches the checkpoint of `other_size` (larger)
    /// but not this one. The signing key was used to sign a rewritten history.
    Fork { size: u64, other_size: u64, source: CheckpointSource },
    /// Checkpoint number `index` (0-based, in its source) is unusable: not signed by the
    /// trusted key, a bad signature, or malformed.
    BadCheckpoint { source: CheckpointSource, index: usize, error: AuditError },
    /// Checkpoint number `index` is validly signed but names another log (origin ≠ key name).
    ForeignOrigin { source: CheckpointSource, index: usize, origin: String },
}

/// One problem, tied to an entry (`seq`) where it can be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub seq: Option<u64>,
    pub kind: FindingKind,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.seq.unwrap_or(0);
        match &self.kind {
            FindingKind::Deleted { after_seq, count } => {
                write!(f, "deleted: {count} entr{} from seq {seq} (after seq {after_seq})", plural(*count))
            }
            FindingKind::Inserted { after_seq, count } => {
                write!(f, "inserted: {count} entr{} repeating seq {seq}.. (after seq {after_seq})", plural(*count))
            }
            FindingKind::Reordered { after_seq, count } => {
                write!(f, "reordered: {count} entr{} from seq {seq} appear after seq {after_seq}", plural(*count))
            }
            FindingKind::TimeWentBackwards { previous_us, recorded_us } => {
                write!(f, "time went backwards at seq {seq}: {recorded_us} < {previous_us} µs")
            }
            FindingKind::CheckpointMismatch { size, source, last_good_size } => write!(
                f,
                "altered: {source} checkpoint at size {size} does not match the log; the change is in entries {}..={size}",
                last_good_size + 1
            ),
            FindingKind::Truncated { checkpoint_size, log_size } => {
                write!(f, "truncated: the log has {log_size} entries but a checkpoint vouches for {checkpoint_size}")
            }
            FindingKind::Fork { size, other_size, source } => write!(
                f,
                "forked: {source} checkpoint at size {size} is inconsistent with the checkpoint at size {other_size}"
            ),
            FindingKind::BadCheckpoint { source, index, error } => {
                write!(f, "bad {source} checkpoint #{index}: {error}")
            }
            FindingKind::ForeignOrigin { source, index, origin } => {
                write!(f, "{source} checkpoint #{index} is for another log ({origin})")
            }
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

/// The result of a verification run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entry findings in log order, then checkpoint findings.
    pub findings: Vec<Finding>,
    pub entries_checked: u64,
    /// Validly signed checkpoints that were compared with the log.
    pub checkpoints_checked: u64,
    /// Root of the whole log as read (the head a new checkpoint would sign).
    pub root: Hash,
    /// Largest checkpoint size whose root matched (entries beyond it are not yet vouched for).
    pub covered_size: u64,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Matched,
    Mismatched,
}

struct Cp {
    size: u64,
    root: Hash,
    source: CheckpointSource,
    status: Status,
}

/// Streaming verifier: [`LogVerifier::push`] every entry in order, then
/// [`LogVerifier::finish`]. Memory: O(log n) for the tree plus the checkpoints and findings.
pub struct LogVerifier {
    tree: TreeBuilder,
    buf: Vec<u8>,
    cps: Vec<Cp>,
    next_cp: usize,
    /// Highest seq seen so far.
    high: u64,
    prev_us: Option<i64>,
    /// Missing seq ranges (start → end, inclusive) not yet filled by late entries.
    gaps: BTreeMap<u64, u64>,
    entry_findings: Vec<Finding>,
    cp_findings: Vec<Finding>,
    last_good: u64,
}

impl LogVerifier {
    /// `checkpoints` are those stored with the log, `witnessed` those kept elsewhere; both are
    /// signed notes that must verify with `verifier`, whose name must be their origin.
    pub fn new<S: AsRef<str>, W: AsRef<str>>(
        checkpoints: &[S],
        witnessed: &[W],
        verifier: &VerifierKey,
    ) -> LogVerifier {
        let mut cp_findings = Vec::new();
        let mut cps: Vec<Cp> = Vec::new();
        let notes = checkpoints
            .iter()
            .map(|s| (CheckpointSource::Log, s.as_ref()))
            .enumerate()
            .chain(witnessed.iter().map(|s| (CheckpointSource::Witnessed, s.as_ref())).enumerate());
        for (index, (source, note)) in notes {
            match checkpoint::open(note, verifier) {
                Err(error) => {
                    cp_findings.push(Finding { seq: None, kind: FindingKind::BadCheckpoint { source, index, error } })
                }
                Ok(cp) if cp.origin != verifier.name() => cp_findings
                    .push(Finding { seq: None, kind: FindingKind::ForeignOrigin { source, index, origin: cp.origin } }),
                Ok(cp) => {
                    let dup = cps.iter().any(|c| c.size == cp.size && c.root == cp.root && c.source == source);
                    if !dup {
                        cps.push(Cp { size: cp.size, root: cp.root, source, status: Status::Pending });
                    }
                }
            }
        }
        cps.sort_by_key(|c| (c.size, c.source == CheckpointSource::Witnessed));
        // Same size, different roots: a fork whatever the log says.
        for pair in cps.windows(2) {
            if let [a, b] = pair
                && a.size == b.size
                && a.root != b.root
            {
                cp_findings.push(Finding {
                    seq: None,
                    kind: FindingKind::Fork { size: b.size, other_size: a.size, source: b.source },
                });
            }
        }
        let mut v = LogVerifier {
            tree: TreeBuilder::new(),
            buf: Vec::with_capacity(512),
            cps,
            next_cp: 0,
            high: 0,
            prev_us: None,
            gaps: BTreeMap::new(),
            entry_findings: Vec::new(),
            cp_findings,
            last_good: 0,
        };
        v.check_checkpoints_at_size(); // size-0 checkpoints
        v
    }

    /// Feed the next entry, in the order the log stores them (ascending seq).
    pub fn push(&mut self, entry: &AuditEntry) {
        self.push_ref(&entry.borrowed());
    }

    /// [`LogVerifier::push`] for an entry borrowed from wherever it is stored.
    pub fn push_ref(&mut self, entry: &crate::entry::EntryRef<'_>) {
        // Time is checked along the entries that advance the sequence; a late or repeated
        // entry is already reported as such.
        if self.check_sequence(entry.seq) {
            if let Some(prev) = self.prev_us
                && entry.recorded_us < prev
            {
                self.entry_findings.push(Finding {
                    seq: Some(entry.seq),
                    kind: FindingKind::TimeWentBackwards { previous_us: prev, recorded_us: entry.recorded_us },
                });
            }
            self.prev_us = Some(entry.recorded_us);
        }
        self.buf.clear();
        entry.write_canonical(&mut self.buf);
        self.tree.push(merkle::leaf_hash(&self.buf));
        self.check_checkpoints_at_size();
    }

    /// Classify `seq`; true if it advances the sequence (in order, or after a gap).
    fn check_sequence(&mut self, seq: u64) -> bool {
        let high = self.high;
        if high.checked_add(1) == Some(seq) {
            self.high = seq;
            return true;
        } else if seq > high {
            self.gaps.insert(high + 1, seq - 1);
            self.high = seq;
            return true;
        } else if let Some((&start, &end)) = self.gaps.range(..=seq).next_back()
            && seq <= end
        {
            // A missing seq turns up late: it was moved, not deleted.
            self.gaps.remove(&start);
            if start < seq {
                self.gaps.insert(start, seq - 1);
            }
            if seq < end {
                self.gaps.insert(seq + 1, end);
            }
            self.note_run(seq, high, true);
        } else {
            // A seq that was already seen (or 0): a duplicated or forged row.
            self.note_run(seq, high, false);
        }
        false
    }

    /// Record a late (`reordered`) or repeated entry, merging consecutive runs.
    fn note_run(&mut self, seq: u64, high: u64, reordered: bool) {
        if let Some(Finding { seq: Some(first), kind }) = self.entry_findings.last_mut() {
            let is_reordered = matches!(kind, FindingKind::Reordered { .. });
            if let FindingKind::Reordered { after_seq, count } | FindingKind::Inserted { after_seq, count } = kind
                && *after_seq == high
                && first.checked_add(*count) == Some(seq)
                && is_reordered == reordered
            {
                *count += 1;
                return;
            }
        }
        let kind = if reordered {
            FindingKind::Reordered { after_seq: high, count: 1 }
        } else {
            FindingKind::Inserted { after_seq: high, count: 1 }
        };
        self.entry_findings.push(Finding { seq: Some(seq), kind });
    }

    fn check_checkpoints_at_size(&mut self) {
        let size = self.tree.size();
        let mut root = None;
        let mut matched = false;
        while let Some(cp) = self.cps.get_mut(self.next_cp)
            && cp.size == size
        {
            let r = *root.get_or_insert_with(|| if size == 0 { EMPTY_ROOT } else { self.tree.root() });
            if cp.root == r {
                cp.status = Status::Matched;
                matched = true;
            } else {
                cp.status = Status::Mismatched;
                self.cp_findings.push(Finding {
                    seq: None,
                    kind: FindingKind::CheckpointMismatch { size, source: cp.source, last_good_size: self.last_good },
                });
            }
            self.next_cp += 1;
        }
        if matched {
            self.last_good = size;
        }
    }

    /// Close the run and produce the report.
    pub fn finish(mut self) -> VerifyReport {
        let log_size = self.tree.size();
        for (&start, &end) in &self.gaps {
            self.entry_findings.push(Finding {
                seq: Some(start),
                kind: FindingKind::Deleted { after_seq: start - 1, count: end - start + 1 },
            });
        }
        // Stable: Deleted findings slot in by seq; others keep their order of discovery.
        self.entry_findings.sort_by_key(|f| f.seq);
        if let Some(max) = self.cps.iter().map(|c| c.size).max()
            && max > log_size
        {
            self.cp_findings.push(Finding {
                seq: Some(self.high.saturating_add(1)),
                kind: FindingKind::Truncated { checkpoint_size: max, log_size },
            });
        }
        // A mismatched checkpoint is inconsistent with any larger checkpoint the log matches.
        let largest_match = self.cps.iter().filter(|c| c.status == Status::Matched).map(|c| c.size).max();
        if let Some(other) = largest_match {
            for c in self.cps.iter().filter(|c| c.status == Status::Mismatched && c.size < other) {
                self.cp_findings.push(Finding {
                    seq: None,
                    kind: FindingKind::Fork { size: c.size, other_size: other, source: c.source },
                });
            }
        }
        let checked = self.cps.iter().filter(|c| c.status != Status::Pending).count() as u64;
        let mut findings = self.entry_findings;
        findings.append(&mut self.cp_findings);
        VerifyReport {
            findings,
            entries_checked: log_size,
            checkpoints_checked: checked,
            root: self.tree.root(),
            covered_size: self.last_good,
        }
    }
}

/// Verify a log against the checkpoints stored with it.
pub fn verify_log<I, E, S>(entries: I, checkpoints: &[S], verifier: &VerifierKey) -> VerifyReport
where
    I: IntoIterator<Item = E>,
    E: Borrow<AuditEntry>,
    S: AsRef<str>,
{
    verify_log_witnessed(entries, checkpoints, &[] as &[&str], verifier)
}

/// Verify a log against the checkpoints stored with it and those witnessed elsewhere (an
/// append-only file outside the database): a rewritten table with re-signed checkpoints
/// verifies on its own but not against the old witnessed checkpoints.
pub fn verify_log_witnessed<I, E, S, W>(
    entries: I,
    checkpoints: &[S],
    witnessed: &[W],
    verifier: &VerifierKey,
) -> VerifyReport
where
    I: IntoIterator<Item = E>,
    E: Borrow<AuditEntry>,
    S: AsRef<str>,
    W: AsRef<str>,
{
    let mut v = LogVerifier::new(checkpoints, witnessed, verifier);
    for e in entries {
        v.push(e.borrow());
    }
    v.finish()
}

/// Split a file of concatenated signed notes (as appended one after another) into notes: a
/// new note starts at the first non-signature line after a signature line.
pub fn split_notes(text: &str) -> Vec<&str> {
    let mut notes = Vec::new();
    let (mut start, mut pos, mut in_sigs) = (0usize, 0usize, false);
    for line in text.split_inclusive('\n') {
        let is_sig = line.starts_with("\u{2014} ");
        if in_sigs && !is_sig {
            notes.push(&text[start..pos]);
            start = pos;
        }
        in_sigs = is_sig;
        pos += line.len();
    }
    if start < text.len() {
        notes.push(&text[start..]);
    }
    notes
}
