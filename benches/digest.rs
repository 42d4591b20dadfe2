//! Micro-benchmarks of ocikit's hashing API (`src/digest.rs`), in bytes per
//! second, for sha256 and sha512 at 4 KiB, 1 MiB and 64 MiB:
//!
//! * `of_bytes`: [`Digest::of_bytes`] over an in-memory buffer;
//! * `hasher`: [`Hasher`] fed in 64 KiB chunks, the streaming path layer
//!   readers use;
//! * `hash_file`: [`hash_file`] on a file in `/dev/shm` (tmpfs, so no disk in
//!   the measurement; a temporary directory where there is no `/dev/shm`).
//!   Files of 1 MiB and more go through the memory map, smaller ones through
//!   buffered reads.
//!
//! ```text
//! cargo bench --bench digest                 # full run
//! cargo bench --bench digest -- --test       # run every benchmark once
//! cargo bench --bench digest -- sha256       # filter
//! ```
//!
//! Compare the sha256 numbers with `openssl speed -evp sha256 -bytes 16384`
//! (benches/compare.sh prints it): both use the CPU's SHA extensions where
//! present, so `of_bytes` at 1 MiB should be within a few percent of it.

use std::fmt;
use std::fs::File;
use std::io::{Seek, Write};
use std::path::Path;
use std::sync::OnceLock;

use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use ocikit::digest::{hash_file, Algorithm, Digest, Hasher};

fn main() {
    divan::main();
}

/// A buffer or file size, shown in KiB ("4 KiB", "1024 KiB", "65536 KiB") so
/// divan's natural sort lists the sizes in order.
#[derive(Clone, Copy)]
struct Size(usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} KiB", self.0 >> 10)
    }
}

const SIZES: [Size; 3] = [Size(4 << 10), Size(1 << 20), Size(64 << 20)];
const MAX_SIZE: usize = 64 << 20;

/// 64 MiB of pseudo-random bytes (xorshift64), built once.
fn data() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut v = Vec::with_capacity(MAX_SIZE);
        while v.len() < MAX_SIZE {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    })
}

fn bench_of_bytes(bencher: Bencher, algorithm: Algorithm, size: Size) {
    let bytes = &data()[..size.0];
    bencher
        .counter(BytesCount::new(size.0))
        .bench(|| Digest::of_bytes(algorithm.clone(), black_box(bytes)));
}

fn bench_hasher(bencher: Bencher, algorithm: Algorithm, size: Size) {
    let bytes = &data()[..size.0];
    bencher.counter(BytesCount::new(size.0)).bench(|| {
        let mut h = Hasher::new(algorithm.clone());
        for chunk in black_box(bytes).chunks(64 << 10) {
            h.update(chunk);
        }
        h.finish()
    });
}

/// An anonymous temporary file holding `size` bytes, on tmpfs when available.
fn temp_file(size: usize) -> File {
    let shm = Path::new("/dev/shm");
    let mut f = if shm.is_dir() {
        tempfile::tempfile_in(shm).or_else(|_| tempfile::tempfile())
    } else {
        tempfile::tempfile()
    }
    .expect("create a temporary file");
    f.write_all(&data()[..size])
        .expect("write the temporary file");
    f.sync_all().ok();
    f
}

fn bench_hash_file(bencher: Bencher, algorithm: Algorithm, size: Size) {
    let file = temp_file(size.0);
    bencher.counter(BytesCount::new(size.0)).bench_local(|| {
        // The buffered-read path reads from the current offset, so start each
        // iteration at 0 (one lseek, negligible even at 4 KiB next to the
        // fstat hash_file does itself).
        (&file).rewind().expect("rewind");
        let (digest, len) = hash_file(algorithm.clone(), &file).expect("hash_file");
        assert_eq!(
            len, size.0 as u64,
            "hash_file hashed the wrong number of bytes"
        );
        digest
    });
}

macro_rules! algorithm_benches {
    ($module:ident, $algorithm:expr) => {
        mod $module {
            use super::*;

            #[divan::bench(args = SIZES, max_time = 3)]
            fn of_bytes(bencher: Bencher, size: Size) {
                bench_of_bytes(bencher, $algorithm, size);
            }

            #[divan::bench(args = SIZES, max_time = 3)]
            fn hasher(bencher: Bencher, size: Size) {
                bench_hasher(bencher, $algorithm, size);
            }

            #[divan::bench(args = SIZES, max_time = 3)]
            fn hash_file(bencher: Bencher, size: Size) {
                bench_hash_file(bencher, $algorithm, size);
            }
        }
    };
}

algorithm_benches!(sha256, Algorithm::Sha256);
algorithm_benches!(sha512, Algorithm::Sha512);
