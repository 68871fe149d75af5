//! RFC 6962 / RFC 9162 Merkle tree hashing (SHA-256), proofs and their verification.
//!
//! * `leaf_hash(d) = SHA-256(0x00 || d)`, `node_hash(l, r) = SHA-256(0x01 || l || r)`.
//! * `MTH({}) = SHA-256("")`; `MTH({d0}) = leaf_hash(d0)`; for `n > 1`, with `k` the largest
//!   power of two smaller than `n`, `MTH(D[n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))`
//!   (RFC 9162 §2.1.1).
//! * Inclusion proofs are the RFC 9162 §2.1.3.1 `PATH`, ordered from the leaf towards the
//!   root; consistency proofs are the §2.1.4.1 `PROOF`/`SUBPROOF`. Both verify with the
//!   §2.1.3.2 and §2.1.4.2 algorithms, implemented step by step below.
//!
//! All functions here take *leaf hashes* (already `leaf_hash`ed), never raw leaf data.

use sha2::{Digest, Sha256};

use crate::AuditError;

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// `MTH` of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// `MTH` of the given leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut b = TreeBuilder::new();
    for l in leaves {
        b.push(*l);
    }
    b.root()
}

/// The RFC 9162 inclusion proof (audit path) of leaf `index` (0-based) in the tree of all
/// `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, AuditError> {
    let size = leaves.len() as u64;
    let m = usize::try_from(index).ok().filter(|&m| m < leaves.len()).ok_or(AuditError::OutOfRange { index, size })?;
    let mut out = Vec::new();
    path(m, leaves, &mut out);
    Ok(out)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    if d.len() <= 1 {
        return;
    }
    let k = split(d.len());
    if m < k {
        path(m, &d[..k], out);
        out.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root(&d[..k]));
    }
}

/// The RFC 9162 consistency proof from the tree of the first `old_size` leaves to the tree of
/// all `leaves`. Empty when `old_size` is 0 or equals the tree size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, AuditError> {
    let size = leaves.len() as u64;
    let m = usize::try_from(old_size)
        .ok()
        .filter(|&m| m <= leaves.len())
        .ok_or(AuditError::OutOfRange { index: old_size, size })?;
    let mut out = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(m, leaves, true, &mut out);
    }
    Ok(out)
}

fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, out);
        out.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root(&d[..k]));
    }
}

/// RFC 9162 §2.1.3.2: does `proof` show that `leaf` is leaf `index` of the tree of
/// `tree_size` leaves whose root is `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, tree_size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= tree_size {
        return false;
    }
    let (mut fnode, mut snode) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `old_size` leaves with root
/// `old_root` is a prefix of the tree of `new_size` leaves with root `new_root`?
///
/// Trivial cases: equal sizes need an empty proof and equal roots; `old_size == 0` needs an
/// empty proof and `old_root` equal to [`EMPTY_ROOT`] (every tree extends the empty tree).
pub fn verify_consistency(old_size: u64, new_size: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == EMPTY_ROOT;
    }
    // Step 1: a non-trivial proof is never empty.
    let Some((head, tail)) = proof.split_first() else {
        return false;
    };
    // Step 2: if old_size is a power of two, the old root is the implicit first element.
    let (first, rest) = if old_size.is_power_of_two() { (old_root, proof) } else { (head, tail) };
    // Steps 3-4.
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    let (mut fr, mut sr) = (*first, *first);
    // Step 6.
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7.
    fr == *old_root && sr == *new_root && snode == 0
}

/// Streaming Merkle tree: push leaf hashes in order; the root of the leaves pushed so far is
/// available at any time. Memory is O(log n): only the roots of the maximal perfect subtrees
/// on the right edge are kept (one per set bit of the size, largest/leftmost first).
#[derive(Clone, Debug, Default)]
pub struct TreeBuilder {
    size: u64,
    edge: Vec<Hash>,
}

impl TreeBuilder {
    pub fn new() -> Self {
        TreeBuilder::default()
    }

    /// Number of leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        // Every trailing one bit of the old size is a perfect subtree of the same height as
        // the one being carried: merge them, like binary addition.
        while s & 1 == 1 {
            let Some(left) = self.edge.pop() else { break };
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.edge.push(h);
        self.size += 1;
    }

    /// Append the leaf hash of raw leaf data.
    pub fn push_data(&mut self, data: &[u8]) {
        self.push(leaf_hash(data));
    }

    /// `MTH` of the leaves pushed so far (O(log n) hashes).
    pub fn root(&self) -> Hash {
        let mut it = self.edge.iter().rev();
        let Some(last) = it.next() else {
            return EMPTY_ROOT;
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}
