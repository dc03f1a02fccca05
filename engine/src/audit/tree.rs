//! The audit log as an RFC 9162 Merkle tree (section 2.1), alongside the
//! hash chain: leaf `i` is the chain hash of record `seq = i + 1` (its 32
//! bytes), so the tree commits to every record and its position, and the
//! chain keeps naming the record that was changed.
//!
//! - leaf hash: `SHA-256(0x00 || record hash)`,
//! - node hash: `SHA-256(0x01 || left || right)`,
//! - the root of `n` leaves splits at the largest power of two below `n`.
//!
//! Inclusion and consistency proofs are the RFC's `PATH` and `PROOF`, and
//! they are verified with the RFC's algorithms (2.1.3.2, 2.1.4.2), which
//! `tools/verify-audit.py` implements again, independently.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The leaf hash of a record, from its chain hash as stored (hex); `None`
/// if that is not 64 hex digits.
pub fn record_leaf(record_hash_hex: &str) -> Option<Hash> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(record_hash_hex, &mut raw).ok()?;
    Some(leaf_hash(&raw))
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// `MTH(D[n])` over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// `PATH(m, D[n])`: the inclusion proof of leaf `index` in the tree of
/// `leaves`; `None` if `index` is not a leaf.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
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
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

/// `PROOF(m, D[n])`: the consistency proof that the tree of the first
/// `old_size` leaves is a prefix of the tree of `leaves`; `None` unless
/// `0 < old_size <= leaves.len()`.
pub fn consistency_proof(old_size: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
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
    if old_size == 0 || old_size > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    subproof(old_size, leaves, true, &mut out);
    Some(out)
}

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not in a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    #[error("old size {old} must be at least 1 and at most the new size {new}")]
    BadSizes { old: u64, new: u64 },
}

/// RFC 9162 2.1.3.2: verify that `leaf` is leaf `index` of the tree of
/// `size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
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
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 2.1.4.2: verify that the tree of `old_size` leaves with root
/// `old_root` is a prefix of the tree of `new_size` leaves with root
/// `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::BadSizes {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongLength);
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
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The tree's right edge: the roots of its perfect subtrees, largest
/// first. Appending a leaf and reading the root cost O(log n), so `serve`
/// keeps one and extends it as records are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, hash) of each perfect subtree, left to right.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.peaks.last() {
            if height != node.0 {
                break;
            }
            self.peaks.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// `MTH` of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, mut r)) = peaks.next() else {
            return empty_root();
        };
        for (_, left) in peaks {
            r = node_hash(left, &r);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    /// Sizes around every power of two up to 70: 1, 2, 3, 4, 5, 7, 8, 9...
    fn sizes() -> Vec<usize> {
        (1..=70).collect()
    }

    #[test]
    fn the_roots_are_rfc_9162s_for_known_vectors() {
        // Test vectors from the Certificate Transparency reference code
        // (merkle_tree_test): the leaves are the bytes "", 0x00, 0x10,
        // 0x2021, 0x3031, 0x40414243..., and the roots of their prefixes.
        let data: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let mut frontier = Frontier::default();
        for (n, want) in roots.iter().enumerate() {
            frontier.push(leaves[n]);
            assert_eq!(hex::encode(root(&leaves[..=n])), *want, "size {}", n + 1);
            assert_eq!(hex::encode(frontier.root()), *want, "frontier {}", n + 1);
        }
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
        for n in sizes() {
            let d = leaves(n);
            let r = root(&d);
            for m in 0..n {
                let proof = inclusion_proof(m, &d).expect("in range");
                verify_inclusion(m as u64, n as u64, &d[m], &proof, &r)
                    .unwrap_or_else(|e| panic!("size {n}, leaf {m}: {e}"));
                // Another leaf, another index, a shorter
                // or longer proof: each is refused.
                let other = leaf_hash(b"not in the tree");
                assert!(verify_inclusion(m as u64, n as u64, &other, &proof, &r).is_err());
                if n > 1 {
                    let wrong = (m + 1) % n;
                    assert!(
                        verify_inclusion(wrong as u64, n as u64, &d[m], &proof, &r).is_err(),
                        "size {n}: leaf {m} verified at {wrong}"
                    );
                }
                // (A proof may verify at another size with the same
                // shape; the size is bound by the signed checkpoint.)
                let mut longer = proof.clone();
                longer.push(r);
                assert!(verify_inclusion(m as u64, n as u64, &d[m], &longer, &r).is_err());
                if !proof.is_empty() {
                    assert!(verify_inclusion(m as u64, n as u64, &d[m], &proof[1..], &r).is_err());
                }
            }
            assert_eq!(inclusion_proof(n, &d), None);
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_forked_one_does_not() {
        for n in sizes() {
            let d = leaves(n);
            let new_root = root(&d);
            for m in 1..=n {
                let old_root = root(&d[..m]);
                let proof = consistency_proof(m, &d).expect("in range");
                verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof)
                    .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
                // A fork: the same old size, one leaf different.
                let mut forked = d.clone();
                forked[m - 1] = leaf_hash(b"forked");
                let forked_root = root(&forked[..m]);
                assert!(
                    verify_consistency(m as u64, n as u64, &forked_root, &new_root, &proof)
                        .is_err(),
                    "{m} -> {n}: a forked old root verified"
                );
                if m < n {
                    let mut tampered = proof.clone();
                    tampered[0][0] ^= 1;
                    assert!(
                        verify_consistency(m as u64, n as u64, &old_root, &new_root, &tampered)
                            .is_err()
                    );
                }
            }
            assert_eq!(consistency_proof(0, &d), None);
            assert_eq!(consistency_proof(n + 1, &d), None);
        }
    }

    #[test]
    fn the_frontier_matches_the_recursive_root_at_every_size() {
        let d = leaves(300);
        let mut f = Frontier::default();
        assert_eq!(f.root(), empty_root());
        for n in 1..=d.len() {
            f.push(d[n - 1]);
            assert_eq!(f.size(), n as u64);
            assert_eq!(f.root(), root(&d[..n]), "size {n}");
        }
    }
}
