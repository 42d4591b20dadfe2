//! Deterministic generator of a large OCI image layout for benchmarks.
//!
//! ```text
//! cargo run --release --example bigimage -- OUTDIR [--scale F]
//! ```
//!
//! Writes an OCI image layout with two tagged images into OUTDIR:
//!
//! * `base`: 7 gzip layers, about 2 GB uncompressed and 60,000+ tar entries at
//!   scale 1 (nested directories of small text/binary files, shared libraries,
//!   a few 20–200 MB files, symlinks, hardlinks, setuid/setgid files, special
//!   directory modes).
//! * `v2`: shares the first 6 layers of `base` byte for byte and replaces the 7th
//!   with a layer holding whiteouts (files and whole directories), an opaque
//!   directory marker, modified files and new files.
//!
//! The output is a pure function of the arguments (fixed mtimes and owners,
//! sorted tar members, gzip header without mtime or name, compression level 6)
//! and is produced by streaming: every layer is generated, tarred, compressed,
//! hashed (uncompressed and compressed) and written in one pass, one layer per
//! rayon task, so memory use stays small whatever the scale.
//!
//! `OUTDIR/.bigimage-stamp` records the generator version and scale; a second
//! run with the same arguments prints `cached` and exits at once. An OUTDIR with
//! a different (or no) stamp is removed and regenerated, but only if it looks
//! like a previous output of this program (it holds `oci-layout` or the stamp)
//! or is empty; anything else is refused rather than deleted.
//!
//! This example deliberately does not use the ocikit library, so that the
//! benchmark input does not depend on the code being benchmarked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use flate2::{Compression, GzBuilder};
use rayon::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// Bump whenever the output for a given scale changes, so stale caches are
/// regenerated.
const GENERATOR: &str = "ocikit-bigimage 1";
/// Modification time of every tar member (2023-11-14T22:13:20Z).
const MTIME: u64 = 1_700_000_000;
const STAMP: &str = ".bigimage-stamp";

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Pseudo-random numbers (splitmix64): tiny, fast and identical everywhere.
// Only integer arithmetic is used for anything that shapes the output.

#[derive(Clone)]
struct Rng(u64);

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix64(seed ^ 0x6a09_e667_f3bc_c908))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Skewed towards small indices (a rough Zipf law), in `0..len`.
    fn skewed(&mut self, len: usize) -> usize {
        let k = self.index(len) + 1;
        self.index(k)
    }

    /// Roughly log-uniform in `lo..=hi`: a uniformly chosen power-of-two band,
    /// then uniform within the band.
    fn log_size(&mut self, lo: u64, hi: u64) -> u64 {
        let lo_bit = u64::from(63 - lo.leading_zeros());
        let hi_bit = u64::from(63 - hi.leading_zeros());
        loop {
            let bit = self.range(lo_bit, hi_bit);
            let v = (1u64 << bit) + self.below(1u64 << bit);
            if (lo..=hi).contains(&v) {
                return v;
            }
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

// ---------------------------------------------------------------------------
// Vocabulary: a few hundred pronounceable words plus common code/English tokens.

const COMMON: &str = "the of and to in is for with return static const void struct if else while \
    import from def class self None true false null error config value data file \
    path name type init main test version license copyright int char size len buffer \
    index string list object module function result options";

fn vocabulary() -> Vec<Vec<u8>> {
    const ONSET: &[&str] = &[
        "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "ch",
        "sh", "th", "st", "pr", "tr", "gr", "bl", "cl", "",
    ];
    const NUCLEUS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y"];
    const CODA: &[&str] = &[
        "", "", "", "n", "r", "s", "t", "l", "x", "m", "ck", "nd", "ng",
    ];
    let mut rng = Rng::new(0x0076_6f63_6162);
    let mut words: Vec<Vec<u8>> = COMMON
        .split_whitespace()
        .map(|w| w.as_bytes().to_vec())
        .collect();
    let mut seen: std::collections::BTreeSet<Vec<u8>> = words.iter().cloned().collect();
    while words.len() < 640 {
        let syllables = rng.range(1, 3);
        let mut w = String::new();
        for _ in 0..syllables {
            w.push_str(rng.pick::<&str>(ONSET));
            w.push_str(rng.pick::<&str>(NUCLEUS));
            w.push_str(rng.pick::<&str>(CODA));
        }
        if w.len() >= 2 && w.len() <= 12 && seen.insert(w.as_bytes().to_vec()) {
            words.push(w.into_bytes());
        }
    }
    words
}

struct Vocab {
    words: Vec<Vec<u8>>,
}

impl Vocab {
    fn word(&self, rng: &mut Rng) -> &str {
        let w = &self.words[rng.skewed(self.words.len())];
        std::str::from_utf8(w).expect("ascii words")
    }

    /// A file or directory name: `word`, `word-word` or `word_word2`.
    fn name(&self, rng: &mut Rng) -> String {
        let mut s = self.word(rng).to_string();
        match rng.below(6) {
            0 => {
                s.push('-');
                s.push_str(self.word(rng));
            }
            1 => {
                s.push('_');
                s.push_str(self.word(rng));
                let _ = write!(s, "{}", rng.below(10));
            }
            _ => {}
        }
        s
    }
}

// ---------------------------------------------------------------------------
// File contents, generated on the fly.

/// How a file's bytes look (and so how well they compress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    /// Source code, docs, configs: lines of words.
    Text,
    /// Executables and libraries: code-like byte patterns, string tables,
    /// padding, some noise.
    Binary,
    /// Already-compressed data (images, .gz): nearly incompressible.
    Packed,
    /// Numeric data (model weights, indexes): low-entropy bytes, zero runs, noise.
    Data,
}

/// Streams `remaining` bytes of generated content.
struct ContentReader<'a> {
    vocab: &'a Vocab,
    rng: Rng,
    kind: Content,
    remaining: u64,
    buf: Vec<u8>,
    pos: usize,
    /// Per-file "instruction snippets" for binary content.
    snippets: Vec<Vec<u8>>,
}

impl<'a> ContentReader<'a> {
    fn new(vocab: &'a Vocab, seed: u64, kind: Content, size: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut snippets = Vec::new();
        if matches!(kind, Content::Binary | Content::Data) {
            for _ in 0..48 {
                let len = rng.range(6, 40) as usize;
                snippets.push((0..len).map(|_| rng.next_u64() as u8).collect());
            }
        }
        ContentReader {
            vocab,
            rng,
            kind,
            remaining: size,
            buf: Vec::with_capacity(80 * KIB as usize),
            pos: 0,
            snippets,
        }
    }

    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        let target = self.remaining.min(64 * KIB) as usize;
        while self.buf.len() < target {
            match self.kind {
                Content::Text => self.text_line(),
                Content::Binary => self.binary_segment(),
                Content::Packed => self.packed_segment(),
                Content::Data => self.data_segment(),
            }
        }
    }

    fn random_bytes(&mut self, n: usize) {
        let mut left = n;
        while left > 0 {
            let v = self.rng.next_u64().to_le_bytes();
            let k = left.min(8);
            self.buf.extend_from_slice(&v[..k]);
            left -= k;
        }
    }

    fn words(&mut self, n: u64, sep: u8) {
        for i in 0..n {
            if i > 0 {
                self.buf.push(sep);
            }
            let w = &self.vocab.words[self.rng.skewed(self.vocab.words.len())];
            self.buf.extend_from_slice(w);
        }
    }

    fn text_line(&mut self) {
        const INDENT: &[&[u8]] = &[b"", b"", b"    ", b"        ", b"\t", b"  "];
        const PUNCT: &[&[u8]] = &[b" = ", b"(", b"): ", b", ", b". ", b": ", b" -> ", b"; "];
        let indent = *self.rng.pick(INDENT);
        self.buf.extend_from_slice(indent);
        let parts = self.rng.range(1, 4);
        for _ in 0..parts {
            let n = self.rng.range(1, 5);
            self.words(n, b' ');
            if self.rng.chance(25) {
                let _ = write!(VecWriter(&mut self.buf), " {}", self.rng.below(4096));
            }
            let p = *self.rng.pick(PUNCT);
            self.buf.extend_from_slice(p);
        }
        if self.rng.chance(2) {
            // A hash, key or other high-entropy token.
            let n = self.rng.range(8, 32) as usize;
            for _ in 0..n {
                let c = b"0123456789abcdef"[self.rng.index(16)];
                self.buf.push(c);
            }
        }
        self.buf.push(b'\n');
    }

    fn snippet_run(&mut self, max: u64) {
        let n = self.rng.range(2, max);
        for _ in 0..n {
            let i = self.rng.skewed(self.snippets.len());
            let start = self.buf.len();
            self.buf.extend_from_slice(&self.snippets[i]);
            // Relocated addresses and immediates: patch a byte or two.
            if self.rng.chance(60) {
                let at = start + self.rng.index(self.buf.len() - start);
                self.buf[at] = self.rng.next_u64() as u8;
            }
        }
    }

    fn binary_segment(&mut self) {
        match self.rng.below(100) {
            0..=43 => self.snippet_run(24),
            44..=63 => {
                let n = self.rng.range(16, 320) as usize;
                self.random_bytes(n);
            }
            64..=81 => {
                let n = self.rng.range(2, 24);
                self.words(n, 0);
                self.buf.push(0);
            }
            82..=91 => {
                let n = self.rng.range(4, 256) as usize;
                self.buf.resize(self.buf.len() + n, 0);
            }
            _ => {
                // Offset/relocation table: increasing little-endian u32s.
                let mut v = self.rng.next_u64() as u32 & 0x00ff_fff0;
                for _ in 0..self.rng.range(4, 48) {
                    v = v.wrapping_add(self.rng.range(1, 64) as u32 * 8);
                    self.buf.extend_from_slice(&v.to_le_bytes());
                    self.buf.extend_from_slice(&[0, 0, 0, 0]);
                }
            }
        }
    }

    fn packed_segment(&mut self) {
        if self.rng.chance(3) {
            let n = self.rng.range(2, 12);
            self.words(n, b' ');
        } else {
            self.random_bytes(512);
        }
    }

    fn data_segment(&mut self) {
        match self.rng.below(100) {
            0..=44 => {
                // Quantised values: a few significant bits per byte.
                let n = self.rng.range(64, 1024);
                let mut bits = 0u64;
                let mut have = 0;
                for _ in 0..n {
                    if have < 3 {
                        bits = self.rng.next_u64();
                        have = 21;
                    }
                    let q = (bits & 7) as u8;
                    bits >>= 3;
                    have -= 1;
                    self.buf.push(0x7c ^ (q * 3));
                }
            }
            45..=54 => {
                let n = self.rng.range(32, 1024) as usize;
                self.buf.resize(self.buf.len() + n, 0);
            }
            55..=74 => self.snippet_run(64),
            _ => {
                let n = self.rng.range(16, 256) as usize;
                self.random_bytes(n);
            }
        }
    }
}

/// `fmt::Write` adapter for a byte buffer.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.buf.len() {
            self.refill();
        }
        let n = out
            .len()
            .min(self.buf.len() - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Layer plans: the sorted list of tar members of one layer.

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File {
        size: u64,
        seed: u64,
        content: Content,
    },
    Symlink(String),
    Hardlink(String),
}

#[derive(Clone, Debug)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// One layer's members keyed by path (no leading `/`, no trailing `/`); the
/// map's byte order is the tar order, which puts every directory before its
/// contents.
struct Tree {
    entries: BTreeMap<String, Entry>,
    /// Owner of implicitly created parent directories and of files added with
    /// [`Tree::file`].
    uid: u64,
    next_seed: u64,
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

fn base_name(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// Whether one path is the other or lies inside it.
fn overlaps(a: &str, b: &str) -> bool {
    let inside =
        |x: &str, y: &str| x.len() > y.len() && x.starts_with(y) && x.as_bytes()[y.len()] == b'/';
    a == b || inside(a, b) || inside(b, a)
}

impl Tree {
    fn new(seed: u64, uid: u64) -> Tree {
        Tree {
            entries: BTreeMap::new(),
            uid,
            next_seed: mix64(seed),
        }
    }

    /// Creates the missing parent directories of `path`; false if a parent
    /// exists but is not a directory.
    fn parents(&mut self, path: &str) -> bool {
        let Some(parent) = parent_of(path) else {
            return true;
        };
        match self.entries.get(parent) {
            Some(e) => matches!(e.kind, Kind::Dir),
            None => {
                if !self.parents(parent) {
                    return false;
                }
                let uid = self.uid;
                self.entries.insert(
                    parent.to_string(),
                    Entry {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid,
                        gid: uid,
                    },
                );
                true
            }
        }
    }

    /// Adds an entry; false (and nothing added) if the path is taken or a
    /// parent is not a directory.
    fn add(&mut self, path: &str, entry: Entry) -> bool {
        if self.entries.contains_key(path) || !self.parents(path) {
            return false;
        }
        self.entries.insert(path.to_string(), entry);
        true
    }

    /// Adds or re-modes a directory.
    fn dir(&mut self, path: &str, mode: u32, uid: u64, gid: u64) {
        if self.parents(path) {
            let e = Entry {
                kind: Kind::Dir,
                mode,
                uid,
                gid,
            };
            match self.entries.get_mut(path) {
                Some(old) if matches!(old.kind, Kind::Dir) => *old = e,
                Some(_) => {}
                None => {
                    self.entries.insert(path.to_string(), e);
                }
            }
        }
    }

    fn seed(&mut self) -> u64 {
        self.next_seed = mix64(self.next_seed.wrapping_add(1));
        self.next_seed
    }

    fn file(&mut self, path: &str, size: u64, content: Content, mode: u32) -> bool {
        let seed = self.seed();
        let uid = self.uid;
        self.add(
            path,
            Entry {
                kind: Kind::File {
                    size,
                    seed,
                    content,
                },
                mode,
                uid,
                gid: uid,
            },
        )
    }

    fn symlink(&mut self, path: &str, target: &str) -> bool {
        let uid = self.uid;
        self.add(
            path,
            Entry {
                kind: Kind::Symlink(target.to_string()),
                mode: 0o777,
                uid,
                gid: uid,
            },
        )
    }

    /// A hardlink to an existing regular file of this layer, which must sort
    /// before the link (true when the link name extends the target's).
    fn hardlink(&mut self, path: &str, target: &str) -> bool {
        let Some(t) = self.entries.get(target) else {
            return false;
        };
        if !matches!(t.kind, Kind::File { .. }) || path <= target {
            return false;
        }
        let e = Entry {
            kind: Kind::Hardlink(target.to_string()),
            ..t.clone()
        };
        self.add(path, e)
    }

    fn regular_files(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::File { .. }))
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn uncompressed_estimate(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e.kind {
                Kind::File { size, .. } => 512 + size.div_ceil(512) * 512,
                _ => 512,
            })
            .sum()
    }
}

/// What kind of files live under a root directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RootKind {
    /// Executables directly in the root (`usr/bin`).
    Bin,
    /// Shared libraries and their support files.
    Lib,
    /// Data, docs, assets.
    Share,
    /// Configuration.
    Etc,
    /// C headers.
    Include,
    /// Compressed manual pages directly in the root.
    Man,
    /// Python packages.
    Python,
    /// npm packages.
    Node,
    /// Application files.
    App,
}

struct Root {
    path: &'static str,
    kind: RootKind,
    weight: u64,
    /// Maximum nesting below the package directory (0: files directly in the
    /// root, no package directory).
    depth: u64,
}

const fn root(path: &'static str, kind: RootKind, weight: u64, depth: u64) -> Root {
    Root {
        path,
        kind,
        weight,
        depth,
    }
}

struct Spec {
    created_by: &'static str,
    seed: u64,
    /// Owner of the layer's files.
    uid: u64,
    packages: u64,
    /// Files of 100 B – 32 KiB.
    small: u64,
    /// Libraries and executables of 64 KiB – 4 MiB.
    medium: u64,
    /// Large files: path, size in MiB at scale 1, content.
    large: &'static [(&'static str, u64, Content)],
    roots: &'static [Root],
}

use Content::{Binary, Data, Packed, Text};
use RootKind::{App, Bin, Etc, Include, Lib, Man, Node, Python, Share};

const SPECS: [Spec; 8] = [
    Spec {
        created_by: "/bin/sh -c #(nop) ADD file:rootfs.tar in / ",
        seed: 1,
        uid: 0,
        packages: 220,
        small: 22_000,
        medium: 450,
        large: &[("usr/lib/locale/locale-archive", 60, Binary)],
        roots: &[
            root("usr/bin", Bin, 6, 0),
            root("usr/sbin", Bin, 2, 0),
            root("usr/lib/x86_64-linux-gnu", Lib, 14, 2),
            root("usr/lib", Share, 10, 3),
            root("usr/share", Share, 30, 4),
            root("usr/share/man/man1", Man, 6, 0),
            root("etc", Etc, 8, 2),
            root("usr/include", Include, 10, 3),
        ],
    },
    Spec {
        created_by: "/bin/sh -c apt-get update && apt-get install -y build-essential llvm",
        seed: 2,
        uid: 0,
        packages: 150,
        small: 14_000,
        medium: 200,
        large: &[("usr/lib/x86_64-linux-gnu/libLLVM.so.18.1", 120, Binary)],
        roots: &[
            root("usr/bin", Bin, 4, 0),
            root("usr/lib/x86_64-linux-gnu", Lib, 12, 2),
            root("usr/lib/gcc/x86_64-linux-gnu/13", Lib, 10, 3),
            root("usr/include", Include, 25, 4),
            root("usr/share", Share, 15, 3),
            root("usr/libexec", Bin, 2, 1),
        ],
    },
    Spec {
        created_by: "/bin/sh -c pip install --no-cache-dir -r requirements.txt",
        seed: 3,
        uid: 0,
        packages: 120,
        small: 9_000,
        medium: 160,
        large: &[(
            "usr/local/lib/python3.12/site-packages/torch/lib/libtorch_cpu.so",
            200,
            Binary,
        )],
        roots: &[
            root("usr/local/lib/python3.12/site-packages", Python, 90, 5),
            root("usr/local/bin", Bin, 3, 0),
        ],
    },
    Spec {
        created_by: "/bin/sh -c cd /opt/webui && npm ci --omit=dev",
        seed: 4,
        uid: 0,
        packages: 300,
        small: 7_000,
        medium: 40,
        large: &[("opt/webui/dist/main.bundle.js", 20, Text)],
        roots: &[root("opt/webui/node_modules", Node, 1, 5)],
    },
    Spec {
        created_by: "/bin/sh -c #(nop) COPY dir:models in /opt/models ",
        seed: 5,
        uid: 0,
        packages: 10,
        small: 200,
        medium: 30,
        large: &[
            ("opt/models/encoder/weights.bin", 160, Data),
            ("opt/models/decoder/weights.bin", 100, Data),
            ("opt/models/embeddings.bin", 80, Data),
            ("opt/models/tokenizer/merges.bin", 40, Binary),
            ("opt/models/index/ann.idx", 30, Data),
        ],
        roots: &[root("opt/models", Share, 1, 2)],
    },
    Spec {
        created_by: "/bin/sh -c #(nop) COPY dir:config in / ",
        seed: 6,
        uid: 0,
        packages: 40,
        small: 3_000,
        medium: 60,
        large: &[],
        roots: &[
            root("etc", Etc, 30, 3),
            root("usr/share/webui/static", Share, 60, 3),
            root("opt/webui/conf", Etc, 10, 2),
        ],
    },
    Spec {
        created_by: "/bin/sh -c #(nop) COPY --chown=1000:1000 dir:app in /app ",
        seed: 7,
        uid: 1000,
        packages: 30,
        small: 800,
        medium: 10,
        large: &[],
        roots: &[root("app", App, 10, 4), root("app/bin", Bin, 1, 0)],
    },
    // v2's replacement for the 7th layer (whiteouts etc. are added by `plan_v2`).
    Spec {
        created_by: "/bin/sh -c #(nop) COPY --chown=1000:1000 dir:app in /app  # v2",
        seed: 8,
        uid: 1000,
        packages: 30,
        small: 900,
        medium: 10,
        large: &[],
        roots: &[root("app", App, 10, 4), root("app/bin", Bin, 1, 0)],
    },
];

fn scaled(n: u64, scale: f64, min: u64) -> u64 {
    ((n as f64 * scale).round() as u64).max(min)
}

/// A small file's extension, content and mode for a root kind.
fn small_file_kind(kind: RootKind, rng: &mut Rng) -> (&'static str, Content, u32) {
    let table: &[(&'static str, Content, u32)] = match kind {
        Bin => &[("", Binary, 0o755), ("", Text, 0o755)],
        Lib => &[
            (".so", Binary, 0o644),
            (".a", Binary, 0o644),
            (".o", Binary, 0o644),
            (".la", Text, 0o644),
            (".pc", Text, 0o644),
            (".conf", Text, 0o644),
        ],
        Share => &[
            (".txt", Text, 0o644),
            (".json", Text, 0o644),
            (".xml", Text, 0o644),
            (".svg", Text, 0o644),
            (".html", Text, 0o644),
            (".css", Text, 0o644),
            (".png", Packed, 0o644),
            (".mo", Binary, 0o644),
            (".dat", Binary, 0o644),
            ("", Text, 0o644),
        ],
        Etc => &[
            (".conf", Text, 0o644),
            (".cfg", Text, 0o644),
            ("", Text, 0o644),
            (".yaml", Text, 0o644),
            (".list", Text, 0o644),
            (".key", Text, 0o600),
        ],
        Include => &[
            (".h", Text, 0o644),
            (".hpp", Text, 0o644),
            (".inc", Text, 0o644),
        ],
        Man => &[(".1.gz", Packed, 0o644)],
        Python => &[
            (".py", Text, 0o644),
            (".py", Text, 0o644),
            (".py", Text, 0o644),
            (".pyi", Text, 0o644),
            (".pyc", Binary, 0o644),
            (".json", Text, 0o644),
            (".txt", Text, 0o644),
        ],
        Node => &[
            (".js", Text, 0o644),
            (".js", Text, 0o644),
            (".js", Text, 0o644),
            (".json", Text, 0o644),
            (".md", Text, 0o644),
            (".d.ts", Text, 0o644),
            (".map", Text, 0o644),
            (".mjs", Text, 0o644),
        ],
        App => &[
            (".py", Text, 0o644),
            (".js", Text, 0o644),
            (".html", Text, 0o644),
            (".css", Text, 0o644),
            (".json", Text, 0o644),
            (".png", Packed, 0o644),
            (".woff2", Packed, 0o644),
            (".svg", Text, 0o644),
        ],
    };
    *rng.pick(table)
}

/// A layer's regular contents (packages spread over the roots) at `scale`.
fn plan_layer(spec: &Spec, scale: f64, vocab: &Vocab) -> Tree {
    let mut rng = Rng::new(spec.seed.wrapping_mul(0x1000_0001));
    let mut tree = Tree::new(spec.seed, spec.uid);

    // Packages and, per package and root, a few nested subdirectories.
    let npkg = scaled(spec.packages, scale, 3) as usize;
    let mut pkgs: Vec<String> = Vec::with_capacity(npkg);
    while pkgs.len() < npkg {
        let mut n = vocab.name(&mut rng);
        if rng.chance(30) {
            let _ = write!(n, "{}", rng.below(4));
        }
        if !pkgs.contains(&n) {
            pkgs.push(n);
        }
    }
    let mut subdirs: Vec<Vec<Vec<String>>> = Vec::with_capacity(npkg);
    for _ in 0..npkg {
        let mut per_root = Vec::new();
        for r in spec.roots {
            let mut dirs = vec![String::new()];
            if r.depth > 0 {
                for _ in 0..rng.range(0, r.depth * 3) {
                    let parent = rng.pick(&dirs).clone();
                    if parent.matches('/').count() as u64 + 1 >= r.depth {
                        continue;
                    }
                    let name = vocab.name(&mut rng);
                    let d = if parent.is_empty() {
                        name
                    } else {
                        format!("{parent}/{name}")
                    };
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
            per_root.push(dirs);
        }
        subdirs.push(per_root);
    }
    let total_weight: u64 = spec.roots.iter().map(|r| r.weight).sum();
    let pick_root = |rng: &mut Rng| {
        let mut w = rng.below(total_weight);
        for (i, r) in spec.roots.iter().enumerate() {
            if w < r.weight {
                return i;
            }
            w -= r.weight;
        }
        unreachable!()
    };
    let dir_for = |rng: &mut Rng, ri: usize, pkgs: &[String], subdirs: &[Vec<Vec<String>>]| {
        let r = &spec.roots[ri];
        if r.depth == 0 {
            return r.path.to_string();
        }
        let p = rng.skewed(pkgs.len());
        let sub = rng.pick(&subdirs[p][ri]);
        if sub.is_empty() {
            format!("{}/{}", r.path, pkgs[p])
        } else {
            format!("{}/{}/{}", r.path, pkgs[p], sub)
        }
    };

    // Small files.
    let nsmall = scaled(spec.small, scale, 40);
    let mut added = 0;
    let mut attempts = 0;
    while added < nsmall && attempts < nsmall * 4 {
        attempts += 1;
        let ri = pick_root(&mut rng);
        let kind = spec.roots[ri].kind;
        let dir = dir_for(&mut rng, ri, &pkgs, &subdirs);
        let (ext, content, mode) = small_file_kind(kind, &mut rng);
        let name = vocab.name(&mut rng);
        let size = rng.log_size(100, 32 * KIB);
        if tree.file(&format!("{dir}/{name}{ext}"), size, content, mode) {
            added += 1;
        }
    }

    // Medium files: shared libraries (with their .so symlinks) and executables.
    let code_roots: Vec<usize> = (0..spec.roots.len())
        .filter(|&i| matches!(spec.roots[i].kind, Bin | Lib | Python | Node | App | Share))
        .collect();
    let nmedium = scaled(spec.medium, scale, 1);
    // Below scale 1 the largest medium files shrink too, so that small test
    // images stay small (the per-layer minimum of one medium file would
    // otherwise dominate).
    let medium_max = scaled(4 * MIB, scale.min(1.0), 128 * KIB);
    let mut added = 0;
    let mut attempts = 0;
    while added < nmedium && attempts < nmedium * 4 {
        attempts += 1;
        let ri = *rng.pick(&code_roots);
        let dir = dir_for(&mut rng, ri, &pkgs, &subdirs);
        let size = rng.log_size(64 * KIB, medium_max);
        let word = vocab.word(&mut rng).to_string();
        match spec.roots[ri].kind {
            Bin => {
                if tree.file(&format!("{dir}/{word}"), size, Binary, 0o755) {
                    added += 1;
                }
            }
            Python => {
                let name = format!("{dir}/_{word}.cpython-312-x86_64-linux-gnu.so");
                if tree.file(&name, size, Binary, 0o755) {
                    added += 1;
                }
            }
            Share | Node | App => {
                let ext = rng.pick(&[".dat", ".wasm", ".bin", ".node"]);
                if tree.file(&format!("{dir}/{word}{ext}"), size, Binary, 0o644) {
                    added += 1;
                }
            }
            _ => {
                let (maj, min, pat) = (rng.below(8), rng.below(30), rng.below(12));
                let real = format!("lib{word}.so.{maj}.{min}.{pat}");
                if tree.file(&format!("{dir}/{real}"), size, Binary, 0o644) {
                    added += 1;
                    let soname = format!("lib{word}.so.{maj}");
                    tree.symlink(&format!("{dir}/{soname}"), &real);
                    if rng.chance(50) {
                        tree.symlink(&format!("{dir}/lib{word}.so"), &soname);
                    }
                }
            }
        }
    }

    // Large files.
    for &(path, mib, content) in spec.large {
        let size = ((mib * MIB) as f64 * scale).round() as u64;
        let mode = if path.ends_with(".so") || path.contains(".so.") {
            0o755
        } else {
            0o644
        };
        tree.file(path, size.max(64 * KIB), content, mode);
    }

    // Symlinks between files of this layer: relative within a directory,
    // absolute across directories, like distribution packages do.
    let files = tree.regular_files();
    let nlinks = (files.len() / 40).max(3);
    for _ in 0..nlinks {
        let target = rng.pick(&files).clone();
        let other = rng.pick(&files).clone();
        let dir = parent_of(&other).unwrap_or("");
        let name = format!(
            "{}{}",
            vocab.word(&mut rng),
            rng.pick(&["", ".link", "-current", ".1"])
        );
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let link_target = if parent_of(&target) == parent_of(&path) {
            base_name(&target).to_string()
        } else {
            format!("/{target}")
        };
        tree.symlink(&path, &link_target);
    }

    // A few hardlinks (name extends the target's so the target comes first).
    for _ in 0..5 {
        let target = rng.pick(&files).clone();
        let suffix = vocab.word(&mut rng).to_string();
        tree.hardlink(&format!("{target}-{suffix}"), &target);
    }
    tree
}

/// Distribution skeleton for the first layer: special directories, usr-merge
/// symlinks, setuid/setgid programs, per-package docs and dpkg metadata.
fn add_base_os(tree: &mut Tree, scale: f64, vocab: &Vocab) {
    let mut rng = Rng::new(0xba5e);
    for (path, mode, uid, gid) in [
        ("tmp", 0o1777, 0, 0),
        ("var/tmp", 0o1777, 0, 0),
        ("root", 0o700, 0, 0),
        ("home", 0o755, 0, 0),
        ("home/app", 0o750, 1000, 1000),
        ("var/mail", 0o2775, 0, 8),
        ("var/log", 0o755, 0, 0),
        ("var/cache/ldconfig", 0o700, 0, 0),
        ("var/spool/cron/crontabs", 0o1730, 0, 0),
        ("etc/ssl/private", 0o700, 0, 0),
        ("proc", 0o555, 0, 0),
        ("sys", 0o555, 0, 0),
        ("dev", 0o755, 0, 0),
        ("run", 0o755, 0, 0),
        ("srv", 0o755, 0, 0),
        ("opt", 0o755, 0, 0),
        ("mnt", 0o755, 0, 0),
        ("media", 0o755, 0, 0),
        ("usr/local/bin", 0o755, 0, 0),
    ] {
        tree.dir(path, mode, uid, gid);
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        tree.symlink(link, target);
    }
    tree.symlink(
        "usr/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    );
    tree.file(
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        236 * KIB,
        Binary,
        0o755,
    );
    for (path, mode) in [
        ("usr/bin/su", 0o4755),
        ("usr/bin/passwd", 0o4755),
        ("usr/bin/mount", 0o4755),
        ("usr/bin/umount", 0o4755),
        ("usr/bin/newgrp", 0o4755),
        ("usr/bin/chsh", 0o4755),
        ("usr/bin/gpasswd", 0o4755),
        ("usr/bin/chage", 0o2755),
        ("usr/bin/expiry", 0o2755),
        ("usr/sbin/unix_chkpwd", 0o2755),
    ] {
        let size = rng.log_size(32 * KIB, 96 * KIB);
        tree.file(path, size, Binary, mode);
    }
    for (path, mode, gid) in [
        ("etc/passwd", 0o644, 0),
        ("etc/group", 0o644, 0),
        ("etc/shadow", 0o640, 42),
        ("etc/gshadow", 0o640, 42),
        ("etc/hostname", 0o644, 0),
        ("etc/os-release", 0o644, 0),
    ] {
        let seed = tree.seed();
        tree.add(
            path,
            Entry {
                kind: Kind::File {
                    size: 100 + rng.below(900),
                    seed,
                    content: Text,
                },
                mode,
                uid: 0,
                gid,
            },
        );
    }
    // gzip/gunzip/zcat style hardlinks among the coreutils.
    tree.file("usr/bin/gzip", 98 * KIB, Binary, 0o755);
    tree.hardlink("usr/bin/gzip-compat", "usr/bin/gzip");
    let perl = scaled(3800 * KIB, scale.min(1.0), 64 * KIB);
    tree.file("usr/bin/perl5.36", perl, Binary, 0o755);
    tree.hardlink("usr/bin/perl5.36-threads", "usr/bin/perl5.36");

    let npkg = scaled(220, scale, 4);
    for _ in 0..npkg {
        let pkg = vocab.name(&mut rng);
        let size = rng.log_size(200, 16 * KIB);
        tree.file(&format!("usr/share/doc/{pkg}/copyright"), size, Text, 0o644);
        let size = rng.log_size(200, 16 * KIB);
        tree.file(
            &format!("usr/share/doc/{pkg}/changelog.Debian.gz"),
            size,
            Packed,
            0o644,
        );
        let size = rng.log_size(100, 8 * KIB);
        tree.file(&format!("var/lib/dpkg/info/{pkg}.list"), size, Text, 0o644);
        let size = rng.log_size(100, 8 * KIB);
        tree.file(
            &format!("var/lib/dpkg/info/{pkg}.md5sums"),
            size,
            Text,
            0o644,
        );
    }
    tree.file(
        "var/lib/dpkg/status",
        scaled(2 * MIB, scale, 4 * KIB),
        Text,
        0o644,
    );
}

/// What the v2 top layer changes relative to the six shared layers.
#[derive(Default)]
struct V2Changes {
    deleted_dirs: Vec<String>,
    deleted_files: Vec<String>,
    opaque: Vec<String>,
    modified: Vec<String>,
}

/// Adds whiteouts, an opaque directory and modified files to v2's top layer.
fn add_v2_changes(tree: &mut Tree, lower: &[&Tree], rng: &mut Rng) -> V2Changes {
    let mut claimed: Vec<String> = tree.entries.keys().cloned().collect();
    let mut ch = V2Changes::default();
    let free = |claimed: &[String], p: &str| !claimed.iter().any(|c| overlaps(c, p));

    // Candidate lists, in the deterministic (sorted) order of the lower trees.
    let dirs_at = |t: &Tree, prefix: &str, depth: usize| -> Vec<String> {
        t.entries
            .iter()
            .filter(|(p, e)| {
                matches!(e.kind, Kind::Dir)
                    && p.starts_with(prefix)
                    && p.matches('/').count() == depth
            })
            .map(|(p, _)| p.clone())
            .collect()
    };
    let files_under = |t: &Tree, prefix: &str| -> Vec<String> {
        t.entries
            .iter()
            .filter(|(p, e)| matches!(e.kind, Kind::File { .. }) && p.starts_with(prefix))
            .map(|(p, _)| p.clone())
            .collect()
    };
    let mut choose = |cands: Vec<String>, n: usize, claimed: &mut Vec<String>| -> Vec<String> {
        let mut out = Vec::new();
        let mut tries = 0;
        while out.len() < n && !cands.is_empty() && tries < n * 50 {
            tries += 1;
            let c = rng.pick(&cands).clone();
            if free(claimed, &c) {
                claimed.push(c.clone());
                out.push(c);
            }
        }
        out
    };

    // Whole directories: two package docs (layer 1), one Python package
    // (layer 3), one npm package (layer 4).
    let mut dirs = choose(dirs_at(lower[0], "usr/share/doc/", 3), 2, &mut claimed);
    dirs.extend(choose(
        dirs_at(lower[2], "usr/local/lib/python3.12/site-packages/", 5),
        1,
        &mut claimed,
    ));
    dirs.extend(choose(
        dirs_at(lower[3], "opt/webui/node_modules/", 3),
        1,
        &mut claimed,
    ));
    ch.deleted_dirs = dirs;

    // Single files from layers 1, 2 and 6, and one large model file (layer 5).
    let mut files = choose(files_under(lower[0], "usr/"), 10, &mut claimed);
    files.extend(choose(files_under(lower[1], "usr/"), 5, &mut claimed));
    files.extend(choose(files_under(lower[5], ""), 3, &mut claimed));
    files.extend(choose(
        vec!["opt/models/index/ann.idx".to_string()],
        1,
        &mut claimed,
    ));
    ch.deleted_files = files;

    // One opaque directory (layer 6's configuration of one package).
    ch.opaque = choose(dirs_at(lower[5], "etc/", 1), 1, &mut claimed);

    // Modified files: configuration from layers 6 and 1.
    let mut modified = choose(files_under(lower[5], "etc/"), 20, &mut claimed);
    modified.extend(choose(files_under(lower[0], "etc/"), 5, &mut claimed));
    ch.modified = modified;

    for p in ch.deleted_dirs.iter().chain(&ch.deleted_files) {
        let wh = match parent_of(p) {
            Some(parent) => format!("{parent}/.wh.{}", base_name(p)),
            None => format!(".wh.{p}"),
        };
        add_root_file(tree, &wh, 0, Text, 0o644);
    }
    for d in &ch.opaque {
        tree.dir(d, 0o755, 0, 0);
        add_root_file(tree, &format!("{d}/.wh..wh..opq"), 0, Text, 0o644);
        for i in 0..4 {
            let size = rng.log_size(100, 4 * KIB);
            add_root_file(tree, &format!("{d}/v2-{i}.conf"), size, Text, 0o644);
        }
    }
    for p in &ch.modified {
        // New contents, same ownership and mode as the file being replaced.
        let old = lower.iter().rev().find_map(|t| t.entries.get(p));
        let (mode, uid, gid) = old.map_or((0o644, 0, 0), |e| (e.mode, e.uid, e.gid));
        let seed = tree.seed();
        let size = rng.log_size(100, 16 * KIB);
        let saved = tree.uid;
        tree.uid = 0;
        tree.add(
            p,
            Entry {
                kind: Kind::File {
                    size,
                    seed,
                    content: Text,
                },
                mode,
                uid,
                gid,
            },
        );
        tree.uid = saved;
    }
    add_root_file(tree, "etc/webui-release", 64, Text, 0o644);
    ch
}

/// Adds a root-owned file whose parent directories are root-owned too (the
/// v2 layer's own files belong to uid 1000).
fn add_root_file(tree: &mut Tree, path: &str, size: u64, content: Content, mode: u32) {
    let saved = tree.uid;
    tree.uid = 0;
    tree.file(path, size, content, mode);
    tree.uid = saved;
}

// ---------------------------------------------------------------------------
// Writing layers and blobs.

/// A writer that hashes and counts what passes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

struct LayerOut {
    diff_id: String,
    digest: String,
    size: u64,
    uncompressed: u64,
    entries: usize,
}

fn blob_path(out: &Path, hex: &str) -> PathBuf {
    out.join("blobs").join("sha256").join(hex)
}

fn write_layer(out: &Path, tree: &Tree, vocab: &Vocab) -> io::Result<LayerOut> {
    let tmp = temp_in(out, ".tmp-layer-")?;
    let file_w = HashWriter::new(BufWriter::with_capacity(MIB as usize, tmp.as_file()));
    let gz = GzBuilder::new().write(file_w, Compression::new(6));
    let tar_w = BufWriter::with_capacity(256 * KIB as usize, HashWriter::new(gz));
    let mut ar = tar::Builder::new(tar_w);
    for (path, e) in &tree.entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(MTIME);
        let (user, group) = (owner_name(e.uid), owner_name(e.gid));
        h.set_username(user)?;
        h.set_groupname(group)?;
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                let name = format!("{path}/");
                if name.len() < 100 {
                    // Directories carry a trailing slash, as docker/buildkit write them.
                    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    ar.append(&h, io::empty())?;
                } else {
                    ar.append_data(&mut h, path, io::empty())?;
                }
            }
            Kind::File {
                size,
                seed,
                content,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                let r = ContentReader::new(vocab, *seed, *content, *size);
                ar.append_data(&mut h, path, r)?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                ar.append_link(&mut h, path, target)?;
            }
            Kind::Hardlink(target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                ar.append_link(&mut h, path, target)?;
            }
        }
    }
    let tar_w = ar.into_inner()?;
    let hashing_gz = tar_w.into_inner().map_err(|e| e.into_error())?;
    let (gz, diff_id, uncompressed) = hashing_gz.finish();
    let file_w = gz.finish()?;
    let (mut buf, digest, size) = file_w.finish();
    buf.flush()?;
    drop(buf);
    tmp.persist(blob_path(out, &digest)).map_err(|e| e.error)?;
    Ok(LayerOut {
        diff_id,
        digest,
        size,
        uncompressed,
        entries: tree.entries.len(),
    })
}

fn owner_name(id: u64) -> &'static str {
    match id {
        0 => "root",
        8 => "mail",
        42 => "shadow",
        _ => "app",
    }
}

/// A temporary file in OUTDIR, readable by everyone once renamed into place
/// (tempfile's default is 0600).
fn temp_in(out: &Path, prefix: &str) -> io::Result<tempfile::NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(fs::Permissions::from_mode(0o644));
    }
    b.tempfile_in(out)
}

/// Writes a small blob; returns its hex digest and size.
fn write_blob(out: &Path, bytes: &[u8]) -> io::Result<(String, u64)> {
    let digest = hex(&Sha256::digest(bytes));
    let mut tmp = temp_in(out, ".tmp-blob-")?;
    tmp.write_all(bytes)?;
    tmp.persist(blob_path(out, &digest)).map_err(|e| e.error)?;
    Ok((digest, bytes.len() as u64))
}

/// Writes a small file atomically (temp file + rename).
fn write_small(out: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_in(out, ".tmp-")?;
    tmp.write_all(bytes)?;
    tmp.persist(out.join(name)).map_err(|e| e.error)?;
    Ok(())
}

fn history_time(i: usize) -> String {
    format!("2023-11-14T{:02}:{:02}:00Z", 10 + i / 6, (i % 6) * 10)
}

/// Writes config and manifest for one image; returns the manifest descriptor.
fn write_image(out: &Path, name: &str, layers: &[(&LayerOut, &Spec)]) -> io::Result<Value> {
    let history: Vec<Value> = layers
        .iter()
        .enumerate()
        .map(|(i, (_, spec))| {
            json!({
                "created": history_time(i),
                "created_by": spec.created_by,
                "comment": "generated by ocikit examples/bigimage.rs",
            })
        })
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(l, _)| format!("sha256:{}", l.diff_id))
        .collect();
    let config = json!({
        "created": history_time(layers.len() - 1),
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Entrypoint": ["/app/bin/server"],
            "WorkingDir": "/app",
            "Labels": { "org.opencontainers.image.title": format!("bigimage {name}") },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    let (cdigest, csize) = write_blob(out, &serde_json::to_vec(&config)?)?;
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|(l, _)| {
            json!({
                "mediaType": MT_LAYER,
                "digest": format!("sha256:{}", l.digest),
                "size": l.size,
            })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": { "mediaType": MT_CONFIG, "digest": format!("sha256:{cdigest}"), "size": csize },
        "layers": layer_descs,
        "annotations": { "org.opencontainers.image.created": history_time(layers.len() - 1) },
    });
    let (mdigest, msize) = write_blob(out, &serde_json::to_vec(&manifest)?)?;
    Ok(json!({
        "mediaType": MT_MANIFEST,
        "digest": format!("sha256:{mdigest}"),
        "size": msize,
        "platform": { "architecture": "amd64", "os": "linux" },
        "annotations": { "org.opencontainers.image.ref.name": name },
    }))
}

// ---------------------------------------------------------------------------
// Command line and driver.

struct Args {
    out: PathBuf,
    scale: f64,
}

const USAGE: &str = "usage: bigimage OUTDIR [--scale F]   (F > 0, default 1.0)";

fn parse_args() -> Result<Args, String> {
    let mut out = None;
    let mut scale = 1.0f64;
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "-h" || s == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        } else if s == "--scale" || s.starts_with("--scale=") {
            let v = match s.strip_prefix("--scale=") {
                Some(v) => v.to_string(),
                None => it
                    .next()
                    .ok_or("--scale needs a value")?
                    .to_string_lossy()
                    .into_owned(),
            };
            scale = v.parse().map_err(|_| format!("bad --scale {v:?}"))?;
            if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
                return Err(format!("--scale must be in (0, 100], got {v}"));
            }
        } else if s.starts_with('-') && s.len() > 1 {
            return Err(format!("unknown option {s}"));
        } else if out.is_none() {
            out = Some(PathBuf::from(a));
        } else {
            return Err(format!("unexpected argument {s}"));
        }
    }
    Ok(Args {
        out: out.ok_or("missing OUTDIR")?,
        scale,
    })
}

fn stamp_text(scale: f64) -> String {
    format!("{GENERATOR} scale={scale}\n")
}

/// Prepares OUTDIR; returns false if a matching stamp means nothing to do.
fn prepare_outdir(out: &Path, stamp: &str) -> Result<bool, String> {
    if let Ok(found) = fs::read_to_string(out.join(STAMP)) {
        if found == stamp {
            return Ok(false);
        }
    }
    match fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => {
            let ours = out.join("oci-layout").exists() || out.join(STAMP).exists();
            let empty = fs::read_dir(out)
                .map_err(|e| format!("{}: {e}", out.display()))?
                .next()
                .is_none();
            if !ours && !empty {
                return Err(format!(
                    "{} exists, is not empty and is not a bigimage output; refusing to delete it",
                    out.display()
                ));
            }
            if !empty {
                eprintln!("bigimage: removing stale {}", out.display());
                fs::remove_dir_all(out).map_err(|e| format!("removing {}: {e}", out.display()))?;
            }
        }
        Ok(_) => return Err(format!("{} exists and is not a directory", out.display())),
        Err(_) => {}
    }
    fs::create_dir_all(out.join("blobs").join("sha256"))
        .map_err(|e| format!("creating {}: {e}", out.display()))?;
    Ok(true)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

fn run(args: &Args) -> Result<(), String> {
    let start = Instant::now();
    let out = &args.out;
    let stamp = stamp_text(args.scale);
    if !prepare_outdir(out, &stamp)? {
        println!("cached");
        return Ok(());
    }
    let io_err = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| format!("{what}: {e}")
    };
    // Written first so an interrupted run is recognised as ours next time.
    write_small(out, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io_err("oci-layout"))?;

    let vocab = Vocab {
        words: vocabulary(),
    };
    let mut trees: Vec<Tree> = SPECS
        .iter()
        .map(|s| plan_layer(s, args.scale, &vocab))
        .collect();
    add_base_os(&mut trees[0], args.scale, &vocab);
    let (lower, top) = trees.split_at_mut(7);
    let lower_refs: Vec<&Tree> = lower[..6].iter().collect();
    let changes = add_v2_changes(&mut top[0], &lower_refs, &mut Rng::new(0x0002));

    // Largest layers first so the two ends of the schedule meet evenly.
    let mut order: Vec<usize> = (0..trees.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(trees[i].uncompressed_estimate()));
    let mut results: Vec<(usize, LayerOut)> = order
        .par_iter()
        .with_max_len(1)
        .map(|&i| write_layer(out, &trees[i], &vocab).map(|r| (i, r)))
        .collect::<io::Result<_>>()
        .map_err(io_err("writing layer"))?;
    results.sort_by_key(|(i, _)| *i);
    let layers: Vec<LayerOut> = results.into_iter().map(|(_, l)| l).collect();

    let base: Vec<(&LayerOut, &Spec)> = (0..7).map(|i| (&layers[i], &SPECS[i])).collect();
    let v2: Vec<(&LayerOut, &Spec)> = (0..6).chain([7]).map(|i| (&layers[i], &SPECS[i])).collect();
    let descs = vec![
        write_image(out, "base", &base).map_err(io_err("base image"))?,
        write_image(out, "v2", &v2).map_err(io_err("v2 image"))?,
    ];
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": descs,
    });
    let index = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    write_small(out, "index.json", &index).map_err(io_err("index.json"))?;
    write_small(out, STAMP, stamp.as_bytes()).map_err(io_err("stamp"))?;

    // Summary.
    println!("bigimage: {} (scale {})", out.display(), args.scale);
    println!(
        "  {:<6} {:>8} {:>14} {:>14} {:>6}  digest",
        "layer", "entries", "uncompressed", "compressed", "ratio"
    );
    for (i, l) in layers.iter().enumerate() {
        let label = if i < 7 {
            format!("base{}", i + 1)
        } else {
            "v2-7".to_string()
        };
        println!(
            "  {:<6} {:>8} {:>14} {:>14} {:>6.2}  sha256:{}",
            label,
            l.entries,
            l.uncompressed,
            l.size,
            l.uncompressed as f64 / l.size as f64,
            &l.digest[..12]
        );
    }
    let sum = |ls: &[(&LayerOut, &Spec)]| {
        ls.iter().fold((0usize, 0u64, 0u64), |(e, u, c), (l, _)| {
            (e + l.entries, u + l.uncompressed, c + l.size)
        })
    };
    for (name, ls) in [("base", &base), ("v2", &v2)] {
        let (e, u, c) = sum(ls);
        println!(
            "  {name}: {} layers, {e} entries, {} ({u} B) uncompressed, {} ({c} B) compressed, ratio {:.2}",
            ls.len(),
            human(u),
            human(c),
            u as f64 / c as f64
        );
    }
    println!(
        "  v2 top layer: {} whole-directory whiteouts, {} file whiteouts, {} opaque dir, {} modified files",
        changes.deleted_dirs.len(),
        changes.deleted_files.len(),
        changes.opaque.len(),
        changes.modified.len()
    );
    let on_disk: u64 = layers.iter().map(|l| l.size).sum();
    println!(
        "  blobs: {} layer blobs, {} on disk; took {:.1}s",
        layers.len(),
        human(on_disk),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bigimage: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bigimage: {e}");
            ExitCode::FAILURE
        }
    }
}
