//! [`ArchiveStore`]: an image archive (oci-archive or docker-archive) read
//! as a [`Store`], building in memory the documents a legacy docker-archive
//! lacks.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Archive, ArchiveError, ArchiveFormat, Expect, Member};
use crate::digest::{Algorithm, Digest};
use crate::docker::{
    build_manifest, descriptor, layer_media_type, parse_manifest_json_noted, tag_annotations,
    ManifestItem, MAX_MANIFEST_JSON,
};
use crate::layout::IndexFile;
use crate::spec::{
    media_type, Compression, Descriptor, Kind, ANNOTATION_IMAGE_NAME, MAX_DOCUMENT_SIZE,
};
use crate::store::{Blob, BlobEntry, Store, StoreError};

/// An image archive read as a store: blobs are slices of the tar; documents
/// that the archive lacks (legacy docker-archives have no manifest blob) are
/// built in memory, deterministically.
pub struct ArchiveStore {
    archive: Archive,
    format: ArchiveFormat,
    index: Vec<u8>,
    built: HashMap<Digest, Arc<[u8]>>,
    aliases: HashMap<Digest, String>,
    notes: Vec<String>,
    /// Compressed layers of legacy images: their digest was computed here,
    /// so only the config's DiffID can tell whether they are intact.
    diff_id_only: std::collections::HashSet<Digest>,
}

impl std::fmt::Debug for ArchiveStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveStore")
            .field("archive", &self.archive)
            .field("format", &self.format)
            .finish()
    }
}

fn meta_err(path: &Path, reason: String) -> ArchiveError {
    ArchiveError::Metadata {
        path: path.to_path_buf(),
        reason,
    }
}

impl ArchiveStore {
    /// Opens an image archive.
    ///
    /// # Errors
    /// Unreadable archives, and archives that are not image archives of the
    /// expected kind.
    pub fn open(path: &Path, expect: Expect) -> Result<ArchiveStore, ArchiveError> {
        ArchiveStore::open_with(path, expect, &super::OpenOptions::default())
    }

    /// [`ArchiveStore::open`] with the caller's limits and cancellation token.
    ///
    /// # Errors
    /// As [`ArchiveStore::open`].
    pub(crate) fn open_with(
        path: &Path,
        expect: Expect,
        options: &super::OpenOptions,
    ) -> Result<ArchiveStore, ArchiveError> {
        let archive = Archive::open_with(path, options)?;
        // A metadata member that is there but is no file (a directory, a link
        // loop, a link to nothing) is named as what it is, not taken as absent.
        for name in ["oci-layout", "index.json", "manifest.json"] {
            if archive.members().contains_key(name) {
                archive.resolve(name)?;
            }
        }
        let has_layout = archive.has_file("oci-layout") && archive.has_file("index.json");
        let has_manifest = archive.has_file("manifest.json");
        let format = match (expect, has_layout, has_manifest) {
            (Expect::Oci, true, false) => ArchiveFormat::Oci,
            (Expect::Oci | Expect::Any | Expect::Docker, true, true) => ArchiveFormat::DockerOci,
            (Expect::Any, true, false) => ArchiveFormat::Oci,
            (Expect::Docker, true, false) => ArchiveFormat::Oci,
            (Expect::Docker | Expect::Any, false, true) => ArchiveFormat::DockerLegacy,
            (Expect::Oci, false, true) => {
                return Err(meta_err(
                    path,
                    "has no oci-layout and index.json; it is a docker-archive (use docker-archive:)".into(),
                ))
            }
            (_, false, false) => {
                return Err(meta_err(
                    path,
                    "has neither oci-layout and index.json nor manifest.json, so it is not an image archive (archives from Docker before 1.10 are not supported)".into(),
                ))
            }
        };
        let mut store = ArchiveStore {
            archive,
            format,
            index: Vec::new(),
            built: HashMap::new(),
            aliases: HashMap::new(),
            notes: Vec::new(),
            diff_id_only: std::collections::HashSet::new(),
        };
        match format {
            ArchiveFormat::Oci => store.load_oci_view()?,
            ArchiveFormat::DockerOci => {
                store.load_oci_view()?;
                store.add_docker_images()?;
            }
            ArchiveFormat::DockerLegacy => {
                store.index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec();
                store.add_docker_images()?;
            }
        }
        Ok(store)
    }

    /// The format found.
    pub fn format(&self) -> ArchiveFormat {
        self.format
    }

    /// Things ocikit did that the user should know (a manifest built for a
    /// legacy image, RepoTags it could not read).
    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }

    /// `index.json` as stored in the archive (`None` for legacy docker-archives,
    /// which have none).
    pub(crate) fn stored_index(&self) -> Option<Vec<u8>> {
        match self.format {
            ArchiveFormat::DockerLegacy => None,
            _ => self.archive.read("index.json", MAX_DOCUMENT_SIZE).ok(),
        }
    }

    /// The underlying archive.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    fn load_oci_view(&mut self) -> Result<(), ArchiveError> {
        let path = self.archive.path().to_path_buf();
        let layout = self.archive.read("oci-layout", 64 << 10)?;
        let v: serde_json::Value = serde_json::from_slice(&layout)
            .map_err(|e| meta_err(&path, format!("oci-layout is not valid JSON: {e}")))?;
        match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
            Some(crate::layout::IMAGE_LAYOUT_VERSION) => {}
            Some(other) => self.notes.push(format!(
                "oci-layout has imageLayoutVersion {other:?}; reading it as 1.0.0"
            )),
            None => {
                return Err(meta_err(
                    &path,
                    "oci-layout has no imageLayoutVersion".into(),
                ))
            }
        }
        self.index = self.archive.read("index.json", MAX_DOCUMENT_SIZE)?;
        Ok(())
    }

    /// Adds `manifest.json`'s images to the index. Where the archive has an
    /// OCI view (`index.json`: Docker 25+, containerd, podman), that view is
    /// the authority and `manifest.json` its legacy view: a legacy entry is
    /// paired with an OCI manifest by its config *and* its layer files (two
    /// manifests may share a config), and never adds or moves an image the
    /// OCI view already names or reaches. Legacy images with no manifest blob
    /// get one built.
    fn add_docker_images(&mut self) -> Result<(), ArchiveError> {
        let path = self.archive.path().to_path_buf();
        let bytes = self.archive.read("manifest.json", MAX_MANIFEST_JSON)?;
        let (items, notes) = parse_manifest_json_noted(&bytes).map_err(|e| meta_err(&path, e))?;
        self.notes.extend(notes);
        let mut index = IndexFile::parse(&self.index)
            .map_err(|e| meta_err(&path, format!("index.json {e}")))?;
        let reached = self.oci_view_manifests(&index);
        let mut changed = false;
        for (n, item) in items.iter().enumerate() {
            let tags = item.repo_tags.clone().unwrap_or_default();
            let named: Vec<(String, Option<BTreeMap<String, String>>)> = tags
                .iter()
                .map(|t| (t.clone(), tag_annotations(t)))
                .collect();
            // Every name this item carries is one the OCI view has already.
            let all_named = !named.is_empty()
                && named.iter().all(|(t, ann)| {
                    let full = ann.as_ref().and_then(|a| a.get(ANNOTATION_IMAGE_NAME));
                    index.entries.iter().any(|e| {
                        let d = &e.descriptor;
                        d.ref_name() == Some(t.as_str())
                            || full.is_some_and(|f| {
                                d.annotation(ANNOTATION_IMAGE_NAME) == Some(f.as_str())
                                    || d.ref_name() == Some(f.as_str())
                            })
                    })
                });
            // Readers that go by manifest.json must find every layer it names.
            if self.format == ArchiveFormat::DockerOci {
                self.check_layer_members(item)?;
            }
            let paired = self.paired_manifest(n, item)?;
            if all_named {
                continue;
            }
            let manifest = match paired {
                Some(d) => d,
                None => self.build_legacy(n, item)?,
            };
            if named.is_empty() {
                // An unnamed image the OCI view reaches is already there.
                if !reached.contains(&manifest.digest)
                    && !index
                        .entries
                        .iter()
                        .any(|e| e.descriptor.digest == manifest.digest)
                {
                    index.push(&manifest);
                    changed = true;
                }
                continue;
            }
            for (t, ann) in named {
                let Some(ann) = ann else {
                    self.notes.push(format!("manifest.json image {n}: RepoTag {t:?} is not a tagged docker reference; ignored"));
                    continue;
                };
                let full = ann.get(ANNOTATION_IMAGE_NAME).cloned();
                let present = index.entries.iter().any(|e| {
                    e.descriptor.annotation(ANNOTATION_IMAGE_NAME) == full.as_deref()
                        || e.descriptor.ref_name() == Some(t.as_str())
                });
                if !present {
                    let mut d = manifest.clone();
                    d.annotations = Some(ann);
                    index.push(&d);
                    changed = true;
                }
            }
        }
        if changed {
            self.index = index.to_bytes().into_bytes();
        }
        Ok(())
    }

    /// Digests of the manifests and indexes the OCI view reaches from
    /// `index.json` (through nested indexes).
    fn oci_view_manifests(&self, index: &IndexFile) -> std::collections::HashSet<String> {
        let mut seen = std::collections::HashSet::new();
        let mut queue: Vec<Descriptor> =
            index.entries.iter().map(|e| e.descriptor.clone()).collect();
        while let Some(d) = queue.pop() {
            if !seen.insert(d.digest.clone()) || seen.len() > 100_000 {
                continue;
            }
            if d.kind() != Kind::Index {
                continue;
            }
            let Ok(dg) = d.digest() else { continue };
            let Ok(bytes) = self.archive.read(&self.member_for(&dg), MAX_DOCUMENT_SIZE) else {
                continue;
            };
            if let Ok(crate::spec::Document::Index(idx)) =
                crate::spec::parse_document(&bytes, Kind::Index)
            {
                queue.extend(idx.entries().iter().cloned());
            }
        }
        seen
    }

    /// The OCI manifest a `manifest.json` item stands for: same config and
    /// the same layer files, in order. When manifests share the config but
    /// none has those layers, a note says the two views disagree.
    fn paired_manifest(
        &mut self,
        n: usize,
        item: &ManifestItem,
    ) -> Result<Option<Descriptor>, ArchiveError> {
        let candidates = self.stored_manifests_for(&item.config)?;
        let mut found = None;
        for (desc, man) in &candidates {
            let layers = man.layers.as_deref().unwrap_or(&[]);
            if layers.len() == item.layers.len()
                && item
                    .layers
                    .iter()
                    .zip(layers)
                    .all(|(p, l)| self.same_member(p, l))
            {
                found = Some(desc.clone());
                break;
            }
        }
        if found.is_none() && !candidates.is_empty() {
            self.notes.push(format!(
                "{}: manifest.json image {n} lists other layer files than its OCI manifest {} (the one sharing its config); ocikit reads the OCI view, docker load before 25 reads manifest.json",
                self.archive.path().display(),
                candidates.iter().map(|(d, _)| d.digest.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(found)
    }

    /// Whether the member `path` is the blob `desc` names (the same bytes of
    /// the archive), or both are absent for a foreign layer.
    fn same_member(&self, path: &str, desc: &Descriptor) -> bool {
        let Ok(digest) = desc.digest() else {
            return false;
        };
        match (
            self.archive.resolve(path),
            self.archive.resolve(&self.member_for(&digest)),
        ) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => desc.is_foreign(),
            _ => false,
        }
    }

    /// Every layer member `manifest.json` names exists (a layer LayerSources
    /// describes may be left out, as a foreign layer is): readers that go by
    /// `manifest.json` must find what ocikit read from the OCI view.
    fn check_layer_members(&self, item: &ManifestItem) -> Result<(), ArchiveError> {
        let mut diff_ids = None;
        for (i, layer) in item.layers.iter().enumerate() {
            match self.archive.resolve(layer) {
                Err(e @ ArchiveError::NoMember { .. }) => {
                    let Some(sources) = item.layer_sources.as_ref().filter(|s| !s.is_empty())
                    else {
                        return Err(e);
                    };
                    if diff_ids.is_none() {
                        let bytes = self.archive.read(&item.config, MAX_DOCUMENT_SIZE)?;
                        diff_ids = Some(
                            crate::spec::parse_config(&bytes)
                                .ok()
                                .and_then(|c| c.rootfs)
                                .and_then(|r| r.diff_ids)
                                .unwrap_or_default(),
                        );
                    }
                    let described = diff_ids
                        .as_ref()
                        .and_then(|d| d.get(i))
                        .is_some_and(|d| sources.contains_key(d));
                    if !described {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// The manifest blobs of the OCI view whose config is `config_member`,
    /// in member order.
    fn stored_manifests_for(
        &self,
        config_member: &str,
    ) -> Result<Vec<(Descriptor, crate::spec::ImageManifest)>, ArchiveError> {
        let mut out = Vec::new();
        if self.format != ArchiveFormat::DockerOci {
            return Ok(out);
        }
        let config = self.archive.digest(config_member)?.to_string();
        for (name, m) in self.archive.members() {
            let Member::File { size, .. } = m else {
                continue;
            };
            if !name.starts_with("blobs/") || *size > MAX_DOCUMENT_SIZE || *size < 2 {
                continue;
            }
            let Ok(bytes) = self.archive.read(name, MAX_DOCUMENT_SIZE) else {
                continue;
            };
            if bytes.first() != Some(&b'{') {
                continue;
            }
            let Ok(crate::spec::Document::Manifest(man)) =
                crate::spec::parse_document(&bytes, Kind::Unknown)
            else {
                continue;
            };
            if man.config.as_ref().map(|c| c.digest.as_str()) == Some(config.as_str()) {
                let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
                let mt = man
                    .media_type
                    .clone()
                    .unwrap_or_else(|| media_type::OCI_MANIFEST.to_string());
                out.push((descriptor(&mt, &digest, bytes.len() as u64), man));
            }
        }
        Ok(out)
    }

    /// Builds the manifest of a legacy docker-archive image.
    fn build_legacy(&mut self, n: usize, item: &ManifestItem) -> Result<Descriptor, ArchiveError> {
        let path = self.archive.path().to_path_buf();
        let config_bytes = self.archive.read(&item.config, MAX_DOCUMENT_SIZE)?;
        let config_digest = Digest::of_bytes(Algorithm::Sha256, &config_bytes);
        let cfg = crate::spec::parse_config(&config_bytes)
            .map_err(|e| meta_err(&path, format!("config {:?} {e}", item.config)))?;
        let diff_ids = cfg.rootfs.and_then(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != item.layers.len() {
            return Err(meta_err(
                &path,
                format!(
                    "image {n} lists {} layers but its config has {} diff_ids",
                    item.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        self.aliases
            .insert(config_digest.clone(), item.config.clone());
        let config = descriptor(
            media_type::OCI_CONFIG,
            &config_digest,
            config_bytes.len() as u64,
        );
        let mut layers = Vec::with_capacity(item.layers.len());
        for (layer, diff_id) in item.layers.iter().zip(&diff_ids) {
            // LayerSources describes the layer as distributed (foreign layers;
            // every layer since Docker 25). It stands for the member when the
            // member is absent (a foreign layer left out) or is that very blob;
            // an archive may also hold the layer uncompressed instead.
            if let Some(src) = item.layer_sources.as_ref().and_then(|m| m.get(diff_id)) {
                let d = src
                    .digest()
                    .map_err(|e| meta_err(&path, format!("LayerSources[{diff_id}]: {e}")))?;
                let member_size = self.archive.resolve(layer).ok().map(|(_, size)| size);
                if member_size.is_none() || member_size == Some(src.size.max(0) as u64) {
                    if member_size.is_some() {
                        self.aliases.insert(d, layer.clone());
                    }
                    layers.push(src.clone());
                    continue;
                }
            }
            let blob = self.archive.blob(layer)?;
            let mut head = [0u8; 4];
            let k = blob.read_at(&mut head, 0).unwrap_or(0);
            let compression = Compression::sniff(&head[..k]).unwrap_or(Compression::None);
            let digest = match compression {
                // An uncompressed layer's digest is its DiffID; every read checks it.
                Compression::None => Digest::parse(diff_id)
                    .map_err(|e| meta_err(&path, format!("config diff_id: {e}")))?,
                _ => {
                    let d = self.archive.digest(layer)?;
                    self.diff_id_only.insert(d.clone());
                    d
                }
            };
            self.aliases.insert(digest.clone(), layer.clone());
            layers.push(descriptor(
                layer_media_type(compression),
                &digest,
                blob.len(),
            ));
        }
        let bytes = build_manifest(&config, &layers);
        let digest = Digest::of_bytes(Algorithm::Sha256, &bytes);
        let size = bytes.len() as u64;
        self.notes.push(format!(
            "{}: image {n} ({}) has no manifest in the archive; ocikit built {digest} from its config and layers",
            path.display(),
            item.repo_tags.as_ref().and_then(|t| t.first()).map_or("untagged", String::as_str),
        ));
        self.built.insert(digest.clone(), Arc::from(bytes));
        Ok(descriptor(media_type::OCI_MANIFEST, &digest, size))
    }

    fn member_for(&self, digest: &Digest) -> String {
        self.aliases
            .get(digest)
            .cloned()
            .unwrap_or_else(|| digest.blob_path().to_string_lossy().into_owned())
    }
}

impl Store for ArchiveStore {
    fn diff_id_is_only_check(&self, digest: &Digest) -> bool {
        self.diff_id_only.contains(digest)
    }

    fn name(&self) -> String {
        self.archive.path().display().to_string()
    }

    fn index_bytes(&self) -> Result<Vec<u8>, StoreError> {
        Ok(self.index.clone())
    }

    fn open_blob(&self, digest: &Digest) -> Result<Blob, StoreError> {
        if let Some(b) = self.built.get(digest) {
            return Ok(Blob::memory(b.clone()));
        }
        let member = self.member_for(digest);
        match self.archive.blob(&member) {
            Ok(b) => Ok(b),
            Err(ArchiveError::NoMember { .. }) => Err(StoreError::Missing {
                digest: digest.clone(),
                path: self.blob_location(digest),
            }),
            Err(ArchiveError::NotAFile { .. }) => Err(StoreError::NotRegular {
                path: self.blob_location(digest),
                what: "directory",
            }),
            Err(e) => Err(StoreError::Io {
                path: self.blob_location(digest),
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    fn blob_location(&self, digest: &Digest) -> PathBuf {
        PathBuf::from(format!(
            "{}:{}",
            self.archive.path().display(),
            self.member_for(digest)
        ))
    }

    fn list_blobs(&self) -> Result<Vec<BlobEntry>, StoreError> {
        let mut out = Vec::new();
        for (name, m) in self.archive.members() {
            let Some(rest) = name.strip_prefix("blobs/") else {
                continue;
            };
            let Member::File { size, .. } = m else {
                continue;
            };
            let digest = rest
                .split_once('/')
                .and_then(|(alg, enc)| Digest::parse(&format!("{alg}:{enc}")).ok());
            out.push(BlobEntry {
                digest,
                path: PathBuf::from(name),
                size: *size,
                regular: true,
            });
        }
        Ok(out)
    }
}
