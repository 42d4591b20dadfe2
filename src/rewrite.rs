//! Document rewrites through one place: a small in-memory graph of the
//! documents an operation edits (manifests, indexes) and their parents.
//!
//! An edit changes a document's JSON; [`Rewrite::finish`] serialises every
//! edited document once, computes its new digest, points every parent's
//! descriptor at it (which edits the parent in turn), and so on up to the
//! roots. Documents that were not edited keep their stored bytes and digest.
//! Key order is kept (serde_json's `preserve_order`), and the output is
//! compact JSON, so the same edit of the same input gives the same digest.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::digest::{Algorithm, Digest};

/// A problem editing a document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The stored bytes are not a JSON object.
    #[error("{digest} is not a JSON object: {reason}")]
    NotAnObject {
        /// The document.
        digest: Digest,
        /// Why not.
        reason: String,
    },
    /// The documents' links form a cycle.
    #[error("{0} is its own ancestor")]
    Cycle(Digest),
}

/// A document of the graph, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocId(usize);

#[derive(Debug)]
struct Doc {
    digest: Digest,
    media_type: String,
    bytes: Arc<[u8]>,
    edited: Option<Map<String, Value>>,
    parents: Vec<usize>,
}

/// A document whose bytes changed.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// Its digest before.
    pub old: Digest,
    /// Its digest now.
    pub new: Digest,
    /// Its media type (unchanged).
    pub media_type: String,
    /// Its new bytes.
    pub bytes: Arc<[u8]>,
}

impl Rewritten {
    /// The new size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// The graph of documents being rewritten.
#[derive(Debug, Default)]
pub struct Rewrite {
    docs: Vec<Doc>,
    by_digest: HashMap<Digest, usize>,
}

impl Rewrite {
    /// An empty graph.
    pub fn new() -> Rewrite {
        Rewrite::default()
    }

    /// Adds a stored document (once per digest) and returns its id.
    pub fn add(&mut self, digest: &Digest, media_type: &str, bytes: impl Into<Arc<[u8]>>) -> DocId {
        if let Some(&i) = self.by_digest.get(digest) {
            return DocId(i);
        }
        self.docs.push(Doc {
            digest: digest.clone(),
            media_type: media_type.to_string(),
            bytes: bytes.into(),
            edited: None,
            parents: Vec::new(),
        });
        self.by_digest.insert(digest.clone(), self.docs.len() - 1);
        DocId(self.docs.len() - 1)
    }

    /// Records that `parent` holds a descriptor of `child`.
    pub(crate) fn link(&mut self, parent: DocId, child: DocId) {
        if !self.docs[child.0].parents.contains(&parent.0) {
            self.docs[child.0].parents.push(parent.0);
        }
    }

    /// Edits a document's JSON object.
    ///
    /// # Errors
    /// [`RewriteError::NotAnObject`] when its bytes are not a JSON object.
    pub fn edit<T>(
        &mut self,
        id: DocId,
        f: impl FnOnce(&mut Map<String, Value>) -> T,
    ) -> Result<T, RewriteError> {
        let doc = &mut self.docs[id.0];
        if doc.edited.is_none() {
            let parsed: Map<String, Value> =
                serde_json::from_slice(&doc.bytes).map_err(|e| RewriteError::NotAnObject {
                    digest: doc.digest.clone(),
                    reason: e.to_string(),
                })?;
            doc.edited = Some(parsed);
        }
        let Some(obj) = doc.edited.as_mut() else {
            return Err(RewriteError::NotAnObject {
                digest: doc.digest.clone(),
                reason: "not parsed".into(),
            });
        };
        Ok(f(obj))
    }

    /// Serialises every edited document, recomputes digests up to the roots,
    /// and returns the documents that changed, children before parents.
    ///
    /// # Errors
    /// [`RewriteError`].
    pub fn finish(mut self) -> Result<Vec<Rewritten>, RewriteError> {
        let order = self.children_first()?;
        let mut out = Vec::new();
        for i in order {
            let Some(obj) = self.docs[i].edited.take() else {
                continue;
            };
            let bytes: Arc<[u8]> = Value::Object(obj).to_string().into_bytes().into();
            let old = self.docs[i].digest.clone();
            let new = Digest::of_bytes(Algorithm::Sha256, &bytes);
            if new == old {
                continue;
            }
            let size = bytes.len() as u64;
            for p in self.docs[i].parents.clone() {
                self.edit(DocId(p), |parent| {
                    repoint(parent, &old.to_string(), &new.to_string(), size)
                })?;
            }
            out.push(Rewritten {
                old,
                new,
                media_type: self.docs[i].media_type.clone(),
                bytes,
            });
        }
        Ok(out)
    }

    /// Document positions with every child before its parents.
    fn children_first(&self) -> Result<Vec<usize>, RewriteError> {
        // state: 0 new, 1 on the stack, 2 done. A child is emitted after
        // its own children, and its parents after it.
        let n = self.docs.len();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (c, d) in self.docs.iter().enumerate() {
            for &p in &d.parents {
                children[p].push(c);
            }
        }
        let mut state = vec![0u8; n];
        let mut out = Vec::with_capacity(n);
        for start in 0..n {
            if state[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            state[start] = 1;
            while let Some((node, next)) = stack.pop() {
                if let Some(&c) = children[node].get(next) {
                    stack.push((node, next + 1));
                    match state[c] {
                        0 => {
                            state[c] = 1;
                            stack.push((c, 0));
                        }
                        1 => return Err(RewriteError::Cycle(self.docs[c].digest.clone())),
                        _ => {}
                    }
                } else {
                    state[node] = 2;
                    out.push(node);
                }
            }
        }
        Ok(out)
    }
}

/// Points every descriptor in `value` whose digest is `old` at `new`.
fn repoint(obj: &mut Map<String, Value>, old: &str, new: &str, size: u64) {
    let is_it = obj.get("digest").and_then(Value::as_str) == Some(old);
    if is_it {
        obj.insert("digest".into(), Value::String(new.to_string()));
        obj.insert("size".into(), Value::from(size));
    }
    for (_, v) in obj.iter_mut() {
        match v {
            Value::Object(m) => repoint(m, old, new, size),
            Value::Array(a) => {
                for item in a {
                    if let Value::Object(m) = item {
                        repoint(m, old, new, size);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: &Value) -> (Digest, Vec<u8>) {
        let b = v.to_string().into_bytes();
        (Digest::of_bytes(Algorithm::Sha256, &b), b)
    }

    #[test]
    fn edits_propagate_to_the_root_and_untouched_documents_keep_their_bytes() {
        let layer = "sha256:".to_string() + &"a".repeat(64);
        let (m1, m1b) = doc(&serde_json::json!({
            "schemaVersion": 2,
            "layers": [{"mediaType": "x", "digest": layer, "size": 1}]
        }));
        let (m2, m2b) = doc(&serde_json::json!({"schemaVersion": 2, "layers": []}));
        let (ix, ixb) = doc(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"digest": m1.to_string(), "size": m1b.len()},
                {"digest": m2.to_string(), "size": m2b.len()}
            ]
        }));
        let mut r = Rewrite::new();
        let root = r.add(&ix, "index", ixb.clone());
        let a = r.add(&m1, "manifest", m1b);
        let b = r.add(&m2, "manifest", m2b.clone());
        r.link(root, a);
        r.link(root, b);
        r.edit(a, |m| {
            m["layers"][0]["size"] = Value::from(2);
        })
        .unwrap();
        let out = r.finish().unwrap();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].old, m1);
        assert_eq!(out[1].old, ix);
        let index: Value = serde_json::from_slice(&out[1].bytes).unwrap();
        assert_eq!(index["manifests"][0]["digest"], out[0].new.to_string());
        assert_eq!(index["manifests"][0]["size"], out[0].size());
        // The untouched manifest is referenced as it was.
        assert_eq!(index["manifests"][1]["digest"], m2.to_string());
        assert_eq!(
            out[1].new,
            Digest::of_bytes(Algorithm::Sha256, &out[1].bytes)
        );
        // Key order is kept.
        let text = std::str::from_utf8(&out[0].bytes).unwrap();
        assert!(text.starts_with(r#"{"schemaVersion":2,"layers":[{"mediaType":"x","#));
    }

    #[test]
    fn an_edit_that_changes_nothing_changes_no_digest() {
        let (m, mb) = doc(&serde_json::json!({"schemaVersion": 2}));
        let mut r = Rewrite::new();
        let id = r.add(&m, "manifest", mb);
        r.edit(id, |_| ()).unwrap();
        assert!(r.finish().unwrap().is_empty());
    }
}
