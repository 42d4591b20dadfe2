//! ocikit: an offline OCI image-layout toolkit.
//!
//! It reads and writes OCI image-layout directories (`oci-layout`, `index.json`,
//! `blobs/<alg>/<encoded>`) and image archives, resolves tags, digests and
//! platforms to images, verifies every reachable blob in parallel, applies
//! layers to a root filesystem safely ([`flatten`]), squashes ([`squash`]) and
//! explains differences between images ([`diff`]). It never talks to a registry.
//!
//! Stored bytes are sacred: manifests, indexes and configs are kept as stored and
//! parsed only to navigate; every blob read is checked against its digest and
//! size; every write is atomic.
//!
//! # Modules
//! The main types are re-exported at the crate root ([`Layout`], [`Store`],
//! [`Digest`], [`Descriptor`], [`Location`], [`Reference`], [`PlatformChoice`],
//! [`Image`], [`Layer`], [`Limits`], [`Cancel`], [`Verified`], and each
//! operation's options, report and error).
//!
//! - Locations and stores: [`reference`](mod@reference) (LOCATION strings and opening them),
//!   [`layout`] (the writable layout), [`archive`] (image archives, read-only),
//!   [`store`] (the [`Store`] trait).
//! - The model: [`spec`] (OCI and Docker documents), [`digest`], [`platform`],
//!   [`resolve`] (REF and platform to one [`Image`]), [`image`] (its typed
//!   layers), [`graph`] (reachability), [`tarstream`] (layer contents).
//! - Operations: [`verify`], [`gc`], [`copy`], [`flatten`], [`squash`],
//!   [`diff`], [`referrers`] (OCI 1.1 referrers: listing, attaching),
//!   [`rewrite`] (document edits), [`report`] (the documents the binary
//!   prints).
//!   [`diff`], [`index_edit`] (multi-platform indexes), [`rewrite`] (document edits), [`report`] (the documents the
//!   [`diff`], [`files`] (the flattened tree, read-only), [`rewrite`] (document edits), [`report`] (the documents the
//!   binary prints).
//! - Per-call settings and safety: [`limits`], [`cancel`], [`verified`] (the
//!   hashing adapter every read goes through).
//!
//! `guard` and `output` are public only for the `ocikit` binary (hidden from
//! these docs).
//!
//! # Example: resolve and verify a layout
//! ```
//! use ocikit::{Layout, PlatformChoice, Reference};
//! use ocikit::platform::PlatformSpec;
//!
//! let layout = Layout::open(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo"))?;
//! let arm64: PlatformSpec = "linux/arm64".parse()?;
//! let image = layout.resolve(
//!     Some(&Reference::Tag("1.0".into())),
//!     &PlatformChoice::Specific(arm64),
//! )?;
//! println!("manifest {} has {} layers", image.manifest.digest, image.layers().len());
//!
//! let report = ocikit::verify::verify(layout.store(), &ocikit::verify::VerifyOptions::default());
//! assert!(report.is_clean(), "{:?}", report.findings);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: flatten an image to a directory, and diff two builds
//! ```
//! use ocikit::{Layout, PlatformChoice, Reference};
//!
//! let demo = Layout::open(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/demo"))?;
//! let image = demo.resolve(Some(&Reference::Tag("legacy".into())), &PlatformChoice::Host)?;
//! let out = tempfile::tempdir()?;
//! let rootfs = out.path().join("rootfs");
//! let options = ocikit::flatten::FlattenOptions { rootless: true, ..Default::default() };
//! ocikit::flatten::flatten_to_dir(demo.store(), &image, &rootfs, &options)?;
//! assert!(rootfs.join("bin/hello").is_file());
//!
//! let builds = Layout::open(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/builds"))?;
//! let options = ocikit::diff::DiffOptions {
//!     ignore: ocikit::diff::Ignore::parse("timestamps")?,
//!     ..Default::default()
//! };
//! let report = ocikit::diff::diff(
//!     builds.store(),
//!     Some(&Reference::Tag("run1".into())),
//!     builds.store(),
//!     Some(&Reference::Tag("run2".into())),
//!     &options,
//! )?;
//! assert_eq!(report.differences.len(), 1);
//! assert_eq!(report.differences[0].path, "/app/config.json");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// Every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]
// No panics reachable from input: enforced on non-test code (CI runs clippy with -D warnings).
#![cfg_attr(
    not(test),
    warn(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod archive;
pub mod cancel;
pub mod copy;
pub mod delta;
pub mod diff;
pub mod digest;
mod docker;
pub mod files;
pub mod flatten;
pub mod gc;
pub mod graph;
#[doc(hidden)]
pub mod guard;
pub mod image;
pub mod index_edit;
mod layer;
pub mod layout;
pub mod limits;
pub mod modify;
mod open;
#[doc(hidden)]
pub mod output;
pub mod platform;
mod progress;
pub mod prune;
pub mod reference;
pub mod referrers;
pub mod report;
pub mod resolve;
pub mod rewrite;
pub mod spec;
pub mod squash;
pub mod store;
pub mod sync;
pub mod tarstream;
pub mod verified;
pub mod verify;
mod whiteout;

// The main types, at the crate root.
pub use cancel::Cancel;
pub use digest::{Algorithm, Digest};
pub use image::Layer;
pub use layout::{Layout, LayoutError};
pub use limits::Limits;
pub use platform::PlatformSpec;
pub use progress::Progress;
pub use reference::{Location, Reference};
pub use resolve::{Image, PlatformChoice, ResolveError};
pub use spec::{Descriptor, ImageIndex, ImageManifest};
pub use store::{Store, StoreError};
pub use verified::{Mismatch, Verified};

// The operations' options, reports and errors.
pub use copy::{CopyError, CopyOptions, CopyReport, DeltaReport, RunError, RunOptions, RunReport};
pub use diff::{DiffError, DiffOptions, DiffReport};
pub use files::{FilesError, FilesOptions, FilesReport, GetFileOptions, GetFileReport};
pub use flatten::{FlattenError, FlattenOptions, FlattenReport};
pub use gc::{GcError, GcOptions, GcReport};
pub use index_edit::{IndexEditError, IndexOptions, IndexReport};
pub use squash::{SquashOptions, SquashReport};
pub use verify::{VerifyOptions, VerifyReport};
