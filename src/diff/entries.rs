//! Layer entries as compared: per-entry signatures read from a layer
//! stream, the in-memory tree that layers are applied to (whiteouts and
//! opaque markers), and the comparison of two sets of entries.

use std::collections::{BTreeMap, HashMap};
use std::io;

use serde_json::{json, Value};

use super::text::unified;
use super::{Change, DiffOptions, Difference, Level, MAX_TEXT};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::image::Layer;
use crate::layer::{self, LayerError};
use crate::limits::{Limits, IO_BUFFER};
use crate::store::Store;
use crate::tarstream::EntryKind;
use crate::whiteout::{self, Marker};

/// A decoded layer: its entries in order, and its DiffID.
pub(super) type Decoded = (Vec<(Box<str>, Sig)>, Digest);

/// Entries sorted by path, one per path.
pub(super) type Tree = Vec<(Box<str>, Sig)>;

/// An entry's type, as compared and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    Other,
    Whiteout,
    Opaque,
}

impl K {
    fn as_str(self) -> &'static str {
        match self {
            K::File => "file",
            K::Dir => "dir",
            K::Symlink => "symlink",
            K::Hardlink => "hardlink",
            K::Char => "char",
            K::Block => "block",
            K::Fifo => "fifo",
            K::Other => "other",
            K::Whiteout => "whiteout",
            K::Opaque => "opaque",
        }
    }
}

/// The rarely set parts of an entry, boxed so that the common one stays
/// small.
#[derive(Debug, Clone, Default)]
struct Extra {
    link: Box<str>,
    xattrs: BTreeMap<String, String>,
    text: Option<Box<str>>,
}

static NO_XATTRS: BTreeMap<String, String> = BTreeMap::new();

/// One entry, as compared: 88 bytes, plus its path (a `Box<str>`, 16 bytes
/// and the path's own bytes) and, only when it has a link, xattrs or kept
/// text, an [`Extra`].
#[derive(Debug, Clone)]
pub(super) struct Sig {
    sha256: [u8; 32],
    size: u64,
    uid: u64,
    gid: u64,
    mtime: i64,
    extra: Option<Box<Extra>>,
    nsec: u32,
    mode: u32,
    /// Position in its layer: among entries of one path the last wins.
    pos: u32,
    kind: K,
    has_sha: bool,
}

impl Sig {
    fn link(&self) -> &str {
        self.extra.as_ref().map_or("", |e| &e.link)
    }
    fn xattrs(&self) -> &BTreeMap<String, String> {
        self.extra.as_ref().map_or(&NO_XATTRS, |e| &e.xattrs)
    }
    fn text(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.text.as_deref())
    }
    fn sha256(&self) -> Option<String> {
        self.has_sha.then(|| hex(&self.sha256))
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "type": self.kind.as_str(),
            "mode": format!("{:04o}", self.mode),
            "uid": self.uid,
            "gid": self.gid,
            "mtime": if self.nsec == 0 { json!(self.mtime) } else { json!(format!("{}.{:09}", self.mtime, self.nsec)) },
        });
        if self.kind == K::File {
            v["size"] = json!(self.size);
            v["sha256"] = json!(self.sha256());
        }
        if !self.link().is_empty() {
            v["link"] = json!(self.link());
        }
        if !self.xattrs().is_empty() {
            v["xattrs"] = json!(self.xattrs());
        }
        v
    }
}

fn entry_path(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    let parts: Vec<&str> = s
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The 32 bytes of a sha256 digest's hex.
fn sha_bytes(d: &Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    let h = d.encoded().as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        let n = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
        *o = (n(h.get(2 * i).copied().unwrap_or(b'0')) << 4)
            | n(h.get(2 * i + 1).copied().unwrap_or(b'0'));
    }
    out
}

pub(super) fn decode_layer(
    store: &dyn Store,
    layer: &Layer,
    limits: &Limits,
    keep_text: bool,
    progress: &dyn crate::progress::Progress,
) -> Result<Decoded, LayerError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; IO_BUFFER];
    let walked = layer.walk(store, limits, progress, |tar, e| {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut text: Option<Vec<u8>> =
            (keep_text && e.kind == EntryKind::Regular && e.size <= MAX_TEXT).then(Vec::new);
        layer::read_entry_data(tar, &mut buf, |chunk| {
            hasher.update(chunk);
            if let Some(t) = &mut text {
                t.extend_from_slice(chunk);
            }
        })?;
        let Some((key, kind)) = entry_key(entry_path(&e.path), e.kind) else {
            // AUFS metadata or an invalid whiteout name: not in the tree.
            return Ok(layer::Visit::Continue);
        };
        let whiteout = kind == K::Whiteout || kind == K::Opaque;
        let link = match e.kind {
            EntryKind::Hardlink => entry_path(&e.link),
            EntryKind::Symlink => String::from_utf8_lossy(&e.link).into_owned(),
            _ => String::new(),
        };
        let xattrs: BTreeMap<String, String> = e
            .xattrs
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), hex(v)))
            .collect();
        let text = text.and_then(|t| String::from_utf8(t).ok());
        let extra = (!link.is_empty() || !xattrs.is_empty() || text.is_some()).then(|| {
            Box::new(Extra {
                link: link.into_boxed_str(),
                xattrs,
                text: text.map(String::into_boxed_str),
            })
        });
        let (mtime, nsec) = if whiteout {
            (0, 0)
        } else {
            (e.mtime, e.mtime_nsec)
        };
        let sig = Sig {
            kind,
            size: if kind == K::File { e.size } else { 0 },
            has_sha: kind == K::File,
            sha256: if kind == K::File {
                sha_bytes(&hasher.finish())
            } else {
                [0; 32]
            },
            mode: if whiteout { 0 } else { e.mode },
            uid: if whiteout { 0 } else { e.uid },
            gid: if whiteout { 0 } else { e.gid },
            mtime,
            nsec,
            extra,
            pos: u32::try_from(out.len()).unwrap_or(u32::MAX),
        };
        out.push((key.into_boxed_str(), sig));
        Ok(layer::Visit::Continue)
    })?;
    let d = walked.ok_or_else(|| LayerError::Io(io::Error::other("the walk stopped early")))?;
    Ok((out, d.diff_id))
}

/// The key and type an entry (at its normalised path) is compared under,
/// by the rules of `whiteout`: a whiteout is keyed by the path it
/// deletes, an opaque marker by its own path. AUFS metadata (`.wh..wh.*`
/// other than the opaque marker) and names that delete nothing (`.wh.`,
/// `.wh..`, `.wh...`) are no part of the tree: `None`, as flatten ignores
/// them (flatten refuses the invalid names; diff only compares).
fn entry_key(path: String, kind: EntryKind) -> Option<(String, K)> {
    let deletes = match whiteout::classify_path(path.as_bytes()) {
        Marker::None => None,
        Marker::Opaque => return Some((path, K::Opaque)),
        Marker::Delete(target) => Some(String::from_utf8_lossy(target).into_owned()),
        Marker::Metadata | Marker::Invalid => return None,
    };
    if let Some(target) = deletes {
        let parent = &path[..path.len() - whiteout::base_name(path.as_bytes()).len()];
        return Some((format!("{parent}{target}"), K::Whiteout));
    }
    let k = match kind {
        EntryKind::Regular => K::File,
        EntryKind::Directory => K::Dir,
        EntryKind::Symlink => K::Symlink,
        EntryKind::Hardlink => K::Hardlink,
        EntryKind::Char => K::Char,
        EntryKind::Block => K::Block,
        EntryKind::Fifo => K::Fifo,
        EntryKind::Other(_) => K::Other,
    };
    Some((path, k))
}

/// The directory a marker at `path` (a normalised entry path) is in: `/`
/// for a marker at the root.
fn parent_dir(path: &str) -> &str {
    let base = whiteout::base_name(path.as_bytes()).len();
    match path[..path.len() - base].trim_end_matches('/') {
        "" => "/",
        dir => dir,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sorts a layer's entries by path, keeping the last entry of each path
/// (as on disk). In place: no second copy of the entries.
pub(super) fn last_wins(mut v: Vec<(Box<str>, Sig)>) -> Tree {
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.pos.cmp(&b.1.pos)));
    v.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            std::mem::swap(later, kept);
            true
        } else {
            false
        }
    });
    v
}

/// The entries of `tree` (sorted) whose path is `prefix` or starts with
/// `prefix/` (every path for `/`): their index range.
fn subtree(tree: &Tree, p: &str) -> std::ops::Range<usize> {
    let prefix = if p == "/" {
        "/".to_string()
    } else {
        format!("{p}/")
    };
    let start = tree.partition_point(|(k, _)| **k < *prefix);
    let len = tree[start..]
        .iter()
        .take_while(|(k, _)| k.starts_with(&prefix))
        .count();
    start..start + len
}

/// Removals of lower entries by one layer, by path: the position of the
/// first entry that removes the path itself, and of the first that removes
/// what is under it (u32::MAX: none).
type Removals = HashMap<Box<str>, (u32, u32)>;

/// Whether a lower entry at `k` is removed by an entry before `before`.
fn removed(r: &Removals, k: &str, before: u32) -> bool {
    if r.is_empty() {
        return false;
    }
    if r.get(k).is_some_and(|&(s, _)| s < before) {
        return true;
    }
    k.match_indices('/').any(|(i, _)| {
        let a = if i == 0 { "/" } else { &k[..i] };
        r.get(a).is_some_and(|&(_, c)| c < before)
    })
}

/// Applies one layer's entries to an in-memory tree (whiteouts hide lower
/// paths only; opaque markers clear lower children; hardlinks take their
/// target's content). Paths are compared as written: parent symlinks are
/// not resolved. The layer's entries are sorted in place and merged in, so
/// a tree costs its entries and nothing per node.
pub(super) fn apply_layer(tree: &mut Tree, entries: Vec<(Box<str>, Sig)>) {
    let mut removals: Removals = HashMap::new();
    let mut note = |p: &str, pos: u32, itself: bool| {
        let e = removals.entry(p.into()).or_insert((u32::MAX, u32::MAX));
        if itself {
            e.0 = e.0.min(pos);
        }
        e.1 = e.1.min(pos);
    };
    let mut links: Vec<(Box<str>, u32)> = Vec::new();
    for (path, sig) in &entries {
        match sig.kind {
            K::Whiteout => note(path, sig.pos, true),
            K::Opaque => {
                note(parent_dir(path), sig.pos, false);
            }
            kind => {
                if kind == K::Hardlink {
                    links.push((path.clone(), sig.pos));
                }
                if kind != K::Dir && !subtree(tree, path).is_empty() {
                    note(path, sig.pos, false);
                }
            }
        }
    }
    // What this layer adds, in place (no second copy of a large layer).
    let mut upper = entries;
    upper.retain(|(_, s)| !matches!(s.kind, K::Whiteout | K::Opaque));
    upper.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.pos.cmp(&b.1.pos)));
    // Hardlinks, in layer order: the target as it was at that point.
    for (path, pos) in links {
        let Ok(me) = upper.binary_search_by(|(k, s)| (&**k, s.pos).cmp(&(&*path, pos))) else {
            continue;
        };
        let target: Box<str> = upper[me].1.link().into();
        let same = upper.partition_point(|(k, s)| (&**k, s.pos) < (&*target, pos));
        let found = match same.checked_sub(1).map(|i| &upper[i]) {
            Some((k, s)) if **k == *target => Some(s.clone()),
            _ => tree
                .binary_search_by(|(k, _)| (**k).cmp(&*target))
                .ok()
                .filter(|_| !removed(&removals, &target, pos))
                .map(|i| tree[i].1.clone()),
        };
        if let Some(mut t) = found {
            t.kind = K::File;
            t.pos = pos;
            upper[me].1 = t;
        }
    }
    let upper = last_wins(upper);
    if tree.is_empty() {
        *tree = upper;
        return;
    }
    // Merged in place: the lower entries that stay, then the new ones.
    tree.retain(|(k, _)| {
        upper.binary_search_by(|(u, _)| (**u).cmp(k)).is_err() && !removed(&removals, k, u32::MAX)
    });
    tree.extend(upper);
    tree.sort_unstable_by(|a, b| a.0.cmp(&b.0));
}

pub(super) fn compare_entries(
    a: &Tree,
    b: &Tree,
    level: Level,
    layer: Option<usize>,
    options: &DiffOptions,
    out: &mut Vec<Difference>,
) {
    let (mut i, mut j) = (0, 0);
    loop {
        let (k, x, y) = match (a.get(i), b.get(j)) {
            (Some((ka, sa)), Some((kb, sb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    i += 1;
                    (ka, Some(sa), None)
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    (kb, None, Some(sb))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (ka, Some(sa), Some(sb))
                }
            },
            (Some((ka, sa)), None) => {
                i += 1;
                (ka, Some(sa), None)
            }
            (None, Some((kb, sb))) => {
                j += 1;
                (kb, None, Some(sb))
            }
            (None, None) => break,
        };
        let mut d = match (x, y) {
            (Some(x), Some(y)) => {
                let mut fields = Vec::new();
                if x.kind != y.kind {
                    fields.push("type");
                }
                if (x.has_sha, x.sha256) != (y.has_sha, y.sha256) || x.size != y.size {
                    fields.push("content");
                }
                if x.mode != y.mode {
                    fields.push("mode");
                }
                if x.uid != y.uid {
                    fields.push("uid");
                }
                if x.gid != y.gid {
                    fields.push("gid");
                }
                if !options.ignore.timestamps && (x.mtime, x.nsec) != (y.mtime, y.nsec) {
                    fields.push("mtime");
                }
                if x.xattrs() != y.xattrs() {
                    fields.push("xattrs");
                }
                if x.link() != y.link() {
                    fields.push("link");
                }
                if fields.is_empty() {
                    continue;
                }
                let mut d = Difference::new(level, k.to_string(), Change::Changed);
                d.fields = fields.into_iter().map(String::from).collect();
                if options.content && d.fields.iter().any(|f| f == "content") {
                    if let (Some(l), Some(r)) = (x.text(), y.text()) {
                        d.diff = Some(unified(l, r));
                    }
                }
                d
            }
            (Some(x), None) => {
                let kind = if x.kind == K::Whiteout {
                    Change::Undeleted
                } else {
                    Change::Removed
                };
                Difference::new(level, k.to_string(), kind)
            }
            (None, Some(y)) => {
                let kind = if y.kind == K::Whiteout {
                    Change::Deleted
                } else {
                    Change::Added
                };
                Difference::new(level, k.to_string(), kind)
            }
            (None, None) => continue,
        };
        d.layer = layer;
        d.left = x.map(|s| s.to_json());
        d.right = y.map(|s| s.to_json());
        out.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_layers_follow_whiteout_rules() {
        let mut pos = 0u32;
        let mut sig = |k: K| {
            pos += 1;
            Sig {
                kind: k,
                size: 0,
                sha256: [0; 32],
                has_sha: false,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                nsec: 0,
                extra: None,
                pos,
            }
        };
        let mut t = Vec::new();
        apply_layer(
            &mut t,
            vec![
                ("/d".into(), sig(K::Dir)),
                ("/d/a".into(), sig(K::File)),
                ("/x".into(), sig(K::File)),
            ],
        );
        apply_layer(
            &mut t,
            vec![
                ("/d/new".into(), sig(K::File)),
                ("/d/.wh..wh..opq".into(), sig(K::Opaque)),
                ("/x".into(), sig(K::Whiteout)),
            ],
        );
        let keys: Vec<&str> = t.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, vec!["/d", "/d/new"]);
        // A hardlink takes its target as it was at that point: the lower
        // one before a whiteout, nothing after it; a non-directory replaces
        // lower children.
        let mut f = sig(K::File);
        f.size = 7;
        apply_layer(
            &mut t,
            vec![("/f".into(), f), ("/d/z".into(), sig(K::File))],
        );
        let link = |mut s: Sig, to: &str| {
            s.extra = Some(Box::new(Extra {
                link: to.into(),
                ..Extra::default()
            }));
            s
        };
        let l1 = ("/h1".into(), link(sig(K::Hardlink), "/f"));
        let wh = ("/f".into(), sig(K::Whiteout));
        let l2 = ("/h2".into(), link(sig(K::Hardlink), "/f"));
        let sl = ("/d".into(), sig(K::Symlink));
        apply_layer(&mut t, vec![l1, wh, l2, sl]);
        let got: Vec<(&str, &str, u64)> = t
            .iter()
            .map(|(k, s)| (&**k, s.kind.as_str(), s.size))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/d", "symlink", 0),
                ("/h1", "file", 7),
                ("/h2", "hardlink", 0)
            ]
        );
    }

    /// A layer's tar from `(path, type, bytes)` entries.
    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// One uncompressed layer blob, as a store holds it.
    struct OneBlob(Digest, std::sync::Arc<[u8]>);

    impl Store for OneBlob {
        fn name(&self) -> String {
            "memory".into()
        }
        fn index_bytes(&self) -> Result<Vec<u8>, crate::store::StoreError> {
            Ok(Vec::new())
        }
        fn open_blob(
            &self,
            digest: &Digest,
        ) -> Result<crate::store::Blob, crate::store::StoreError> {
            assert_eq!(digest, &self.0);
            Ok(crate::store::Blob::memory(self.1.clone()))
        }
        fn blob_location(&self, digest: &Digest) -> std::path::PathBuf {
            digest.to_string().into()
        }
        fn list_blobs(&self) -> Result<Vec<crate::store::BlobEntry>, crate::store::StoreError> {
            Ok(Vec::new())
        }
    }

    /// The entries diff reads from a layer holding `entries`, sorted.
    fn decoded(entries: &[(&str, tar::EntryType, &[u8])]) -> Tree {
        let bytes = tar_of(entries);
        let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
        let desc = crate::docker::descriptor(
            crate::spec::media_type::OCI_LAYER_TAR,
            &digest,
            bytes.len() as u64,
        );
        let store = OneBlob(digest, bytes.into());
        let layer = Layer::new(0, 1, &desc, None).unwrap();
        let (map, _) = decode_layer(&store, &layer, &Limits::default(), false, &()).unwrap();
        last_wins(map)
    }

    fn differences(a: &Tree, b: &Tree) -> Vec<(String, Change)> {
        let mut out = Vec::new();
        compare_entries(
            a,
            b,
            Level::Layer,
            Some(1),
            &DiffOptions::default(),
            &mut out,
        );
        out.into_iter().map(|d| (d.path, d.kind)).collect()
    }

    fn keys(t: &Tree) -> Vec<&str> {
        t.iter().map(|(k, _)| &**k).collect()
    }

    use tar::EntryType::{Directory as D, Regular as F};

    #[test]
    fn aufs_metadata_names_are_ignored() {
        let plain: &[(&str, tar::EntryType, &[u8])] = &[("d/", D, b""), ("d/f", F, b"x")];
        let with_aufs: &[(&str, tar::EntryType, &[u8])] = &[
            ("d/", D, b""),
            ("d/.wh..wh.plnk/", D, b""),
            ("d/f", F, b"x"),
            (".wh..wh.aufs", F, b""),
            ("d/.wh..wh.orph/", D, b""),
        ];
        let (a, b) = (decoded(plain), decoded(with_aufs));
        // Not part of the tree: no entry, no deletion.
        assert_eq!(keys(&b), vec!["/d", "/d/f"]);
        assert_eq!(differences(&a, &b), vec![]);
        let mut tree = a.clone();
        apply_layer(&mut tree, b);
        assert_eq!(keys(&tree), vec!["/d", "/d/f"]);
        assert_eq!(
            entry_key("/d/.wh..wh.plnk".into(), EntryKind::Directory).map(|k| k.1),
            None
        );
    }

    #[test]
    fn invalid_whiteout_names_are_ignored() {
        let plain: &[(&str, tar::EntryType, &[u8])] = &[("d/", D, b""), ("d/f", F, b"x")];
        let with_invalid: &[(&str, tar::EntryType, &[u8])] = &[
            ("d/", D, b""),
            ("d/f", F, b"x"),
            ("d/.wh.", F, b""),
            ("d/.wh..", F, b""),
            ("d/.wh...", F, b""),
            (".wh..", F, b""),
        ];
        let (a, b) = (decoded(plain), decoded(with_invalid));
        assert_eq!(keys(&b), vec!["/d", "/d/f"]);
        assert_eq!(differences(&a, &b), vec![]);
        // A real whiteout beside them still deletes.
        let c = decoded(&[("d/", D, b""), ("d/.wh.", F, b""), ("d/.wh.f", F, b"")]);
        assert_eq!(keys(&c), vec!["/d", "/d/f"]);
        assert_eq!(c[1].1.kind, K::Whiteout);
        let mut tree = a.clone();
        apply_layer(&mut tree, c);
        assert_eq!(keys(&tree), vec!["/d"]);
    }

    #[test]
    fn opaque_markers_clear_their_own_directory() {
        let lower = decoded(&[("a/", D, b""), ("a/x", F, b"1"), ("b/y", F, b"2")]);
        let mut t = lower.clone();
        apply_layer(
            &mut t,
            decoded(&[("a/.wh..wh..opq", F, b""), ("a/z", F, b"3")]),
        );
        assert_eq!(keys(&t), vec!["/a", "/a/z", "/b/y"]);
        let mut t = lower;
        apply_layer(&mut t, decoded(&[(".wh..wh..opq", F, b""), ("n", F, b"")]));
        assert_eq!(keys(&t), vec!["/n"]);
        assert_eq!(parent_dir("/a/.wh..wh..opq"), "/a");
        assert_eq!(parent_dir("/.wh..wh..opq"), "/");
    }
}
