//! What long operations share: progress reporting and the largest-first
//! worker pool.

use std::sync::atomic::Ordering;

/// Receives progress while an operation reads or writes blobs (for a progress bar). The
/// library never prints; the CLI draws a bar only when stderr is a terminal.
pub trait Progress: Sync {
    /// The total number of bytes about to be hashed.
    fn begin(&self, _total_bytes: u64) {}
    /// `bytes` more were hashed.
    fn advance(&self, _bytes: u64) {}
}

/// No progress reporting.
impl Progress for () {}

/// Runs `f` over `items` (sorted largest first) on every rayon thread, each
/// thread taking the next item when it is free. One blob's hash cannot be
/// split, so this greedy order keeps the cores busy until the end, where
/// rayon's halving of the list can leave one core with most of the bytes.
/// Results come back in the order of `items`.
pub(crate) fn largest_first<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    let workers = rayon::current_num_threads().min(items.len()).max(1);
    rayon::scope(|s| {
        for _ in 0..workers {
            s.spawn(|_| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                out.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}
