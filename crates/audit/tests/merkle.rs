//! RFC 6962 / RFC 9162 Merkle tree tests.
//!
//! Known-answer vectors: the 8-leaf test tree used across certificate-transparency
//! implementations, as published in github.com/transparency-dev/merkle, file
//! `proof/verify_test.go` (variables `leaves`, `roots`, `inclusionProofs`,
//! `consistencyProofs`; there `leaf` and the sizes are 1-based).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mamori_audit::merkle::{
    EMPTY_ROOT, Hash, TreeBuilder, consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion,
};
use proptest::prelude::*;

fn h(s: &str) -> Hash {
    let v: Vec<u8> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn leaves() -> Vec<Hash> {
    let data: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    data.iter().map(|d| leaf_hash(d)).collect()
}

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (1-based leaf, tree size, proof)
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (3, 3, vec![h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
        (
            2,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// (size1, size2, proof)
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

#[test]
fn empty_tree() {
    assert_eq!(root(&[]), EMPTY_ROOT);
    assert_eq!(EMPTY_ROOT, h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    assert_eq!(TreeBuilder::new().root(), EMPTY_ROOT);
}

#[test]
fn known_roots() {
    let l = leaves();
    let mut b = TreeBuilder::new();
    for (i, want) in ROOTS.iter().enumerate() {
        assert_eq!(root(&l[..=i]), h(want), "root of size {}", i + 1);
        b.push(l[i]);
        assert_eq!(b.root(), h(want), "streaming root of size {}", i + 1);
    }
}

#[test]
fn known_inclusion_proofs() {
    let l = leaves();
    for (leaf, size, proof) in inclusion_vectors() {
        let (idx, n) = (leaf - 1, size as usize);
        let got = inclusion_proof(&l[..n], idx).unwrap();
        assert_eq!(got, proof, "proof for leaf {leaf} of {size}");
        let r = h(ROOTS[n - 1]);
        assert!(verify_inclusion(&l[idx as usize], idx, size, &proof, &r));
        // Corruptions (after the reference tests' probes).
        assert!(!verify_inclusion(&l[idx as usize], idx + 1, size, &proof, &r));
        if idx > 0 {
            assert!(!verify_inclusion(&l[idx as usize], idx - 1, size, &proof, &r));
        }
        assert!(!verify_inclusion(&l[idx as usize], idx, size * 2, &proof, &r));
        assert!(!verify_inclusion(&l[idx as usize], idx, size, &proof, &EMPTY_ROOT));
        let mut longer = proof.clone();
        longer.push(r);
        assert!(!verify_inclusion(&l[idx as usize], idx, size, &longer, &r));
        if !proof.is_empty() {
            assert!(!verify_inclusion(&l[idx as usize], idx, size, &proof[..proof.len() - 1], &r));
        }
    }
    assert!(inclusion_proof(&l, 8).is_err());
}

#[test]
fn known_consistency_proofs() {
    let l = leaves();
    for (m, n, proof) in consistency_vectors() {
        let got = consistency_proof(&l[..n as usize], m).unwrap();
        assert_eq!(got, proof, "proof {m} -> {n}");
        let (r1, r2) = (h(ROOTS[m as usize - 1]), h(ROOTS[n as usize - 1]));
        assert!(verify_consistency(m, n, &r1, &r2, &proof));
        if m != n {
            assert!(!verify_consistency(m, n, &r2, &r1, &proof), "swapped roots");
            assert!(!verify_consistency(m, n, &r1, &r2, &[]), "empty proof");
            assert!(!verify_consistency(m + 1, n, &r1, &r2, &proof));
            assert!(!verify_consistency(m, n * 2, &r1, &r2, &proof));
        }
    }
    assert!(verify_consistency(0, 8, &EMPTY_ROOT, &h(ROOTS[7]), &[]));
    assert!(!verify_consistency(0, 8, &h(ROOTS[0]), &h(ROOTS[7]), &[]));
    assert!(!verify_consistency(2, 1, &h(ROOTS[1]), &h(ROOTS[0]), &[]));
    assert!(consistency_proof(&l, 9).is_err());
}

/// Straight from the RFC 9162 definition, for comparison.
fn reference_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node_hash(&reference_mth(&d[..k]), &reference_mth(&d[k..]))
        }
    }
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut x = *h;
    x[bit / 8 % 32] ^= 1 << (bit % 8);
    x
}

fn tree() -> impl Strategy<Value = Vec<Hash>> {
    prop::collection::vec(any::<[u8; 32]>(), 1..70)
}

proptest! {
    #[test]
    fn roots_agree_with_definition(l in prop::collection::vec(any::<[u8; 32]>(), 0..70)) {
        let mut b = TreeBuilder::new();
        for (i, x) in l.iter().enumerate() {
            prop_assert_eq!(b.root(), reference_mth(&l[..i]));
            b.push(*x);
        }
        prop_assert_eq!(b.size(), l.len() as u64);
        prop_assert_eq!(b.root(), reference_mth(&l));
        prop_assert_eq!(root(&l), reference_mth(&l));
    }

    #[test]
    fn every_inclusion_proof_verifies_and_any_bit_flip_fails(l in tree(), bit in 0usize..256, pick in any::<prop::sample::Index>()) {
        let n = l.len() as u64;
        let r = root(&l);
        for i in 0..n {
            let p = inclusion_proof(&l, i).unwrap();
            let leaf = l[i as usize];
            prop_assert!(verify_inclusion(&leaf, i, n, &p, &r));
            prop_assert!(!verify_inclusion(&flip(&leaf, bit), i, n, &p, &r));
            prop_assert!(!verify_inclusion(&leaf, i, n, &p, &flip(&r, bit)));
            if !p.is_empty() {
                let mut bad = p.clone();
                let j = pick.index(bad.len());
                bad[j] = flip(&bad[j], bit);
                prop_assert!(!verify_inclusion(&leaf, i, n, &bad, &r));
            }
            prop_assert!(!verify_inclusion(&leaf, i, n * 2, &p, &r));
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_bit_flip_fails(l in tree(), bit in 0usize..256, pick in any::<prop::sample::Index>()) {
        let n = l.len() as u64;
        let r2 = root(&l);
        for m in 0..=n {
            let p = consistency_proof(&l, m).unwrap();
            let r1 = root(&l[..m as usize]);
            prop_assert!(verify_consistency(m, n, &r1, &r2, &p), "{} -> {}", m, n);
            if m < n {
                prop_assert!(!verify_consistency(m, n, &flip(&r1, bit), &r2, &p));
            }
            // Every tree extends the empty tree, whatever its root: only m > 0 binds r2.
            if 0 < m && m < n {
                prop_assert!(!verify_consistency(m, n, &r1, &flip(&r2, bit), &p));
                if !p.is_empty() {
                    let mut bad = p.clone();
                    let j = pick.index(bad.len());
                    bad[j] = flip(&bad[j], bit);
                    prop_assert!(!verify_consistency(m, n, &r1, &r2, &bad));
                }
            }
        }
    }
}
