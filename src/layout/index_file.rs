//! `index.json` as ocikit edits it: every entry's original bytes kept
//! verbatim unless that entry is edited, so an edit never re-serialises what
//! it did not change.

use super::*;

/// One `index.json` entry: its original bytes (kept verbatim unless edited) and
/// its parsed descriptor.
#[derive(Debug, Clone)]
pub(crate) struct IndexEntry {
    raw: Box<RawValue>,
    /// The parsed descriptor.
    pub descriptor: Descriptor,
}

impl IndexEntry {
    /// Points the entry at another document: `mediaType`, `digest` and
    /// `size` change in place, every other field stays where it was.
    pub(crate) fn set_target(&mut self, to: &Descriptor) {
        let Ok(mut obj) = serde_json::from_str::<Map<String, Value>>(self.raw.get()) else {
            return;
        };
        obj.insert("mediaType".into(), Value::String(to.media_type.clone()));
        obj.insert("digest".into(), Value::String(to.digest.clone()));
        obj.insert("size".into(), Value::from(to.size));
        let text = Value::Object(obj).to_string();
        if let (Ok(raw), Ok(desc)) = (
            RawValue::from_string(text.clone()),
            serde_json::from_str(&text),
        ) {
            self.raw = raw;
            self.descriptor = desc;
        }
    }

    /// Sets (`Some`) or removes (`None`) an annotation, re-serialising only this
    /// entry and keeping its other fields in order.
    pub(crate) fn set_annotation(&mut self, key: &str, value: Option<&str>) {
        let Ok(mut obj) = serde_json::from_str::<Map<String, Value>>(self.raw.get()) else {
            return;
        };
        let mut ann = match obj.shift_remove("annotations") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        match value {
            Some(v) => {
                ann.insert(key.to_string(), Value::String(v.to_string()));
            }
            None => {
                ann.shift_remove(key);
            }
        }
        if !ann.is_empty() {
            obj.insert("annotations".into(), Value::Object(ann));
        }
        let text = Value::Object(obj).to_string();
        if let (Ok(raw), Ok(desc)) = (
            RawValue::from_string(text.clone()),
            serde_json::from_str(&text),
        ) {
            self.raw = raw;
            self.descriptor = desc;
        }
    }
}

/// `index.json` opened for editing. Top-level fields and untouched entries are
/// written back byte for byte; only edited entries are re-serialised.
#[derive(Debug, Clone)]
pub(crate) struct IndexFile {
    fields: Vec<(String, Box<RawValue>)>,
    /// The `manifests` entries.
    pub entries: Vec<IndexEntry>,
}

struct RawObject(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawObject, A::Error> {
                let mut v = Vec::new();
                while let Some((k, raw)) = m.next_entry::<String, Box<RawValue>>()? {
                    v.push((k, raw));
                }
                Ok(RawObject(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl IndexFile {
    /// Parses `index.json` bytes.
    ///
    /// # Errors
    /// JSON hazards, or entries that are not descriptors.
    pub(crate) fn parse(bytes: &[u8]) -> Result<IndexFile, DocumentError> {
        spec::check_json(bytes)?;
        let RawObject(fields) =
            serde_json::from_slice(bytes).map_err(|e| DocumentError::Syntax(e.to_string()))?;
        let mut entries = Vec::new();
        let mut kept = Vec::new();
        for (k, raw) in fields {
            if k == "manifests" {
                let list: Option<Vec<Box<RawValue>>> = serde_json::from_str(raw.get())
                    .map_err(|e| DocumentError::Syntax(format!("manifests: {e}")))?;
                for (i, raw) in list.unwrap_or_default().into_iter().enumerate() {
                    let descriptor = serde_json::from_str(raw.get())
                        .map_err(|e| DocumentError::Syntax(format!("manifests[{i}]: {e}")))?;
                    entries.push(IndexEntry { raw, descriptor });
                }
            }
            kept.push((k, raw));
        }
        if !kept.iter().any(|(k, _)| k == "manifests") {
            kept.push((
                "manifests".into(),
                RawValue::from_string("[]".into())
                    .map_err(|e| DocumentError::Syntax(e.to_string()))?,
            ));
        }
        Ok(IndexFile {
            fields: kept,
            entries,
        })
    }

    /// The bytes to write.
    pub(crate) fn to_bytes(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, raw)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(k.clone()).to_string());
            out.push(':');
            if k == "manifests" {
                out.push('[');
                for (j, e) in self.entries.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push_str(e.raw.get());
                }
                out.push(']');
            } else {
                out.push_str(raw.get());
            }
        }
        out.push('}');
        out
    }

    /// Appends a new entry.
    pub(crate) fn push(&mut self, desc: &Descriptor) {
        let text = serde_json::to_string(desc).unwrap_or_default();
        if let Ok(raw) = RawValue::from_string(text) {
            self.entries.push(IndexEntry {
                raw,
                descriptor: desc.clone(),
            });
        }
    }

    /// Every tag, in order.
    pub(crate) fn tags(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| e.descriptor.ref_name().map(str::to_string))
            .collect()
    }

    /// Moves a name: takes `ref_name` (and `name`, the containerd name) off
    /// every entry whose identity ([`resolve::identity`]) is the new one's,
    /// `name` where given, else `ref_name`. Entries of other identities that
    /// share the `ref.name` (Docker 25 writes the tag part there) keep it.
    /// Returns whether any entry held it.
    pub(crate) fn move_name(&mut self, ref_name: &str, name: Option<&str>) -> bool {
        let identity = name.unwrap_or(ref_name);
        self.untag_where(|d| resolve::identity(d).is_some_and(|i| same_identity(i, identity)))
    }

    /// Untags every entry `pred` selects: removes its `ref.name` (with its now
    /// stale `io.containerd.image.name`). An entry left untagged is dropped if
    /// another entry lists the same digest; otherwise it stays. Returns whether
    /// any entry was selected.
    pub(crate) fn untag_where(&mut self, pred: impl Fn(&Descriptor) -> bool) -> bool {
        let mut found = false;
        let mut i = 0;
        while i < self.entries.len() {
            if !pred(&self.entries[i].descriptor) {
                i += 1;
                continue;
            }
            found = true;
            let digest = self.entries[i].descriptor.digest.clone();
            let duplicate = self
                .entries
                .iter()
                .enumerate()
                .any(|(j, e)| j != i && e.descriptor.digest == digest);
            if duplicate {
                self.entries.remove(i);
            } else {
                let e = &mut self.entries[i];
                e.set_annotation(ANNOTATION_REF_NAME, None);
                e.set_annotation(ANNOTATION_IMAGE_NAME, None);
                i += 1;
            }
        }
        found
    }
}
