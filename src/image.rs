//! The typed layer model between [`crate::resolve`] and the operations.
//!
//! "Manifest + config → per layer: digest, media type and compression,
//! DiffID, size" is worked out here once, validated, and every operation that
//! reads layers (flatten, squash, diff, copy's checks and
//! `--uncompressed-layers`, verify) goes through a [`Layer`]: its
//! [`Layer::walk`] (entries) and [`Layer::uncompressed`] (bytes) are the only
//! ways to read one, both through the one verified reader
//! ([`crate::Store::open_verified`]) and always under the decompression cap
//! of the call's [`Limits`].

use crate::digest::Digest;
use crate::layer::{self, LayerEntries};
use crate::limits::Limits;
use crate::progress::Progress;
use crate::resolve::{Image, ResolveError};
use crate::spec::{Compression, Descriptor, ImageConfig, ImageManifest, Kind};
use crate::store::{BlobReader, Store};
use crate::tarstream::Entry;
use crate::verified::Verified;

// The layer reader lives in a private module; its types are part of
// [`Layer`]'s API.
pub use crate::layer::{
    list_entries, DiffIdMismatch, EntrySummary, LayerDigests, LayerError, LayerStream, Visit,
};

/// Why an image's layer list cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Loading the config failed.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The config lists another number of DiffIDs than there are layers.
    #[error("the config lists {diff_ids} diff_ids for {layers} layers")]
    DiffIdCount {
        /// DiffIDs in the config.
        diff_ids: usize,
        /// Layers in the manifest.
        layers: usize,
    },
    /// A layer descriptor's digest does not parse.
    #[error("layer {} of {count}: digest {digest:?}: {reason}", index + 1)]
    BadDigest {
        /// Position, base first, from 0.
        index: usize,
        /// Layers in the manifest.
        count: usize,
        /// The digest as written.
        digest: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A layer descriptor's size is negative.
    #[error("layer {} of {count} ({digest}) has size {size}", index + 1)]
    BadSize {
        /// Position, base first, from 0.
        index: usize,
        /// Layers in the manifest.
        count: usize,
        /// The layer.
        digest: Digest,
        /// The size as written.
        size: i64,
    },
    /// A DiffID does not parse.
    #[error("the config's diff_ids[{index}] {value:?}: {reason}")]
    BadDiffId {
        /// Position, from 0.
        index: usize,
        /// The value as written.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A `layers` entry has a media type that is no layer type.
    #[error("layer {} of {count} ({digest}) has media type {media_type:?}, which is not a layer type", index + 1)]
    NotALayer {
        /// Position, base first, from 0.
        index: usize,
        /// Layers in the manifest.
        count: usize,
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
}

/// One layer of an image, validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Layer {
    /// Position in the manifest, base first, from 0.
    pub index: usize,
    /// The descriptor as the manifest has it.
    pub descriptor: Descriptor,
    /// The stored blob's digest.
    pub digest: Digest,
    /// The stored size.
    pub size: u64,
    /// The compression its media type announces; `None` for a media type
    /// that is no layer type (see [`Layer::require`]).
    pub compression: Option<Compression>,
    /// The DiffID its config lists; `None` when the manifest's config is no
    /// image config (an artifact).
    pub diff_id: Option<Digest>,
    /// Foreign / non-distributable: its blob may legitimately be absent.
    pub foreign: bool,
}

impl Layer {
    /// Layer `index` (from 0) of `count`, from its descriptor and the DiffID
    /// its config lists (if any). [`layers_of`] is the usual way in; this is
    /// for readers that pair layers with DiffIDs themselves (diff compares
    /// images whose configs may disagree with their manifests).
    ///
    /// # Errors
    /// [`ImageError::BadDigest`], [`ImageError::BadSize`].
    pub(crate) fn new(
        index: usize,
        count: usize,
        d: &Descriptor,
        diff_id: Option<Digest>,
    ) -> Result<Layer, ImageError> {
        let digest = d.digest().map_err(|e| ImageError::BadDigest {
            index,
            count,
            digest: d.digest.clone(),
            reason: e.to_string(),
        })?;
        let size = u64::try_from(d.size).map_err(|_| ImageError::BadSize {
            index,
            count,
            digest: digest.clone(),
            size: d.size,
        })?;
        let (compression, foreign) = match d.kind() {
            Kind::Layer {
                compression,
                foreign,
            } => (Some(compression), foreign),
            _ => (None, false),
        };
        Ok(Layer {
            index,
            descriptor: d.clone(),
            digest,
            size,
            compression,
            diff_id,
            foreign,
        })
    }

    /// The media type.
    pub fn media_type(&self) -> &str {
        &self.descriptor.media_type
    }

    /// The compression, or [`ImageError::NotALayer`] for a non-layer type.
    ///
    /// # Errors
    /// [`ImageError::NotALayer`].
    pub fn require(&self, count: usize) -> Result<Compression, ImageError> {
        self.compression.ok_or_else(|| ImageError::NotALayer {
            index: self.index,
            count,
            digest: self.digest.clone(),
            media_type: self.descriptor.media_type.clone(),
        })
    }

    /// The stored bytes through the one verified reader (size checked before
    /// reading, digest at the end).
    ///
    /// # Errors
    /// A missing, unreadable or wrongly sized blob.
    pub(crate) fn open(&self, store: &dyn Store) -> Result<Verified<BlobReader>, LayerError> {
        store
            .open_verified(&self.digest, self.size as i64)
            .map_err(|e| LayerError::Io(std::io::Error::other(e.to_string())))
    }

    fn compression_or_err(&self) -> Result<Compression, LayerError> {
        self.compression.ok_or_else(|| {
            LayerError::Io(std::io::Error::other(format!(
                "has media type {:?}, not a layer type",
                self.descriptor.media_type
            )))
        })
    }

    /// Walks the layer's tar entries (see `layer::walk_layer`): stored
    /// bytes verified, decompression capped by `limits`, the DiffID checked
    /// when the config lists one, `progress` told of every stored byte.
    /// `Ok(None)` when the visitor stopped early (nothing checked then).
    ///
    /// # Errors
    /// See [`LayerError`].
    pub fn walk<F>(
        &self,
        store: &dyn Store,
        limits: &Limits,
        progress: &dyn Progress,
        visit: F,
    ) -> Result<Option<LayerDigests>, LayerError>
    where
        F: for<'s, 'a> FnMut(&mut LayerEntries<'s, 'a>, Entry) -> Result<Visit, LayerError>,
    {
        let compression = self.compression_or_err()?;
        let (reader, len) = layer::open_stored(store, &self.digest, self.size as i64, progress)?;
        layer::walk_layer(
            reader,
            compression,
            limits.decompression(len),
            self.diff_id.as_ref(),
            visit,
        )
    }

    /// The decompressed bytes, capped by `limits`. Read to the end, then
    /// call [`Layer::finish`] to check the stored digest and the DiffID.
    ///
    /// # Errors
    /// See [`LayerError`].
    pub fn uncompressed<'s>(
        &self,
        store: &'s dyn Store,
        limits: &Limits,
    ) -> Result<LayerStream<'s>, LayerError> {
        let compression = self.compression_or_err()?;
        let reader = self.open(store)?;
        LayerStream::open(reader, compression, limits.decompression(self.size))
    }

    /// Finishes a stream from [`Layer::uncompressed`]: drains it, then
    /// checks the DiffID (the stored digest was checked at its end).
    ///
    /// # Errors
    /// See [`LayerError`].
    pub fn finish(&self, stream: LayerStream<'_>) -> Result<LayerDigests, LayerError> {
        let d = stream.finish(0)?;
        layer::check_diff_id(&d, self.diff_id.as_ref())?;
        Ok(d)
    }

    /// Reads the whole layer once and checks both digests.
    ///
    /// # Errors
    /// See [`LayerError`].
    pub fn check(&self, store: &dyn Store, limits: &Limits) -> Result<LayerDigests, LayerError> {
        let mut stream = self.uncompressed(store, limits)?;
        std::io::copy(&mut stream, &mut std::io::sink()).map_err(layer::layer_error(0))?;
        self.finish(stream)
    }
}

/// The layers of `manifest`, validated against `config` (an image config,
/// or `None` for an artifact whose config is something else): every digest
/// parses, every size is non-negative, and the config lists one DiffID per
/// layer.
///
/// # Errors
/// See [`ImageError`].
pub(crate) fn layers_of(
    manifest: &ImageManifest,
    config: Option<&ImageConfig>,
) -> Result<Vec<Layer>, ImageError> {
    let descs = manifest.layers.as_deref().unwrap_or(&[]);
    let count = descs.len();
    let diff_ids: Option<&[String]> = config.map(|c| {
        c.rootfs
            .as_ref()
            .and_then(|r| r.diff_ids.as_deref())
            .unwrap_or(&[])
    });
    if let Some(ids) = diff_ids {
        if ids.len() != count {
            return Err(ImageError::DiffIdCount {
                diff_ids: ids.len(),
                layers: count,
            });
        }
    }
    let mut out = Vec::with_capacity(count);
    for (index, d) in descs.iter().enumerate() {
        let diff_id = match diff_ids {
            Some(ids) => Some(
                ids[index]
                    .parse::<Digest>()
                    .map_err(|e| ImageError::BadDiffId {
                        index,
                        value: ids[index].clone(),
                        reason: e.to_string(),
                    })?,
            ),
            None => None,
        };
        out.push(Layer::new(index, count, d, diff_id)?);
    }
    Ok(out)
}

impl Image {
    /// The image's layers, base first, validated once against its config
    /// (see `layers_of`).
    ///
    /// # Errors
    /// Config read errors and [`ImageError`]s.
    pub fn typed_layers(&self, store: &dyn Store) -> Result<Vec<Layer>, ImageError> {
        let config = self.image_config(store)?;
        layers_of(&self.parsed, config.as_ref())
    }
}
