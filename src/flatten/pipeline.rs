//! The decoding side of a flatten: which layers to apply, the decoders
//! that read them in parallel (one worker per core, taking layers in
//! order) and write regular files' data into the spool, and the bounded
//! channels that stream their entries, in order, to the one applier.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use rustix::io::Errno;

use super::apply::Applier;
use super::fs;
use super::owner::OwnerPolicy;
use super::{cstring, EntryResult, FlattenError, FlattenReport, Record};
use crate::cancel::Cancel;
use crate::image::Layer;
use crate::layer::{self, LayerDigests, LayerError};
use crate::limits::Limits;
use crate::resolve::Image;
use crate::store::Store;
use crate::tarstream::{Entry, EntryKind, TarReader};
use crate::whiteout;

const CHUNK: usize = 256 << 10;
/// Entry headers queued per layer ahead of the applier (about 300 bytes
/// each): enough that a decoder working ahead rarely waits.
const CHANNEL: usize = 32768;

/// The image's layers through the image model, each required to be a
/// layer type (validated once: digests, sizes, DiffIDs).
pub(super) fn layer_inputs(store: &dyn Store, image: &Image) -> Result<Vec<Layer>, FlattenError> {
    let layers = image.typed_layers(store)?;
    let count = layers.len();
    for l in &layers {
        l.require(count)?;
    }
    Ok(layers)
}

/// A regular file's data, already written (with its metadata) into the
/// spool directory by a decoder; the applier renames it into place.
pub(super) struct Spooled {
    pub(super) name: CString,
    pub(super) dev: u64,
    pub(super) ino: u64,
    /// Owner (and mode) recorded instead of set.
    pub(super) record: Option<Record>,
}

pub(super) enum Msg {
    Entry(Box<Entry>, Option<Spooled>),
    End(Box<Result<LayerDigests, LayerError>>),
}

/// A call that sets one xattr (name, value) on some file.
pub(super) type SetXattr<'a> = dyn Fn(&std::ffi::CStr, &[u8]) -> Result<(), Errno> + 'a;

/// State the decoders and the applier share.
pub(super) struct Shared {
    pub(super) owner: &'static dyn OwnerPolicy,
    pub(super) limits: Limits,
    pub(super) cancel: Cancel,
    pub(super) readable: bool,
    pub(super) spool: OwnedFd,
    pub(super) xattr_skipped: Mutex<HashMap<String, u64>>,
}

impl Shared {
    fn skip(&self, why: String) {
        if let Ok(mut m) = self.xattr_skipped.lock() {
            *m.entry(why).or_default() += 1;
        }
    }

    /// Sets the owner on an open file (or records it when rootless, in the
    /// `user.rootlesscontainers` xattr and in the returned owner).
    pub(super) fn owner_fd(
        &self,
        fd: BorrowedFd<'_>,
        uid: u64,
        gid: u64,
    ) -> EntryResult<Option<(u64, u64)>> {
        self.owner
            .set_owner(fd, uid, gid, &|name, value| self.set_xattr(fd, name, value))
    }

    fn set_xattr(&self, fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) {
        self.set_xattr_with(name, value, &|cname, value| {
            fs::set_xattr_fd(fd, cname, value)
        })
    }

    pub(super) fn set_xattr_with(&self, name: &[u8], value: &[u8], set: &SetXattr<'_>) {
        let Ok(cname) = CString::new(name) else {
            self.skip("name holds a NUL byte".into());
            return;
        };
        if let Err(e) = set(&cname, value) {
            let why = match e {
                Errno::NOTSUP => "the output file system does not support them".to_string(),
                Errno::PERM | Errno::ACCESS => {
                    "not permitted (rootless or unprivileged)".to_string()
                }
                _ => format!("{}", io::Error::from(e)),
            };
            self.skip(why);
        }
    }

    /// Applies an entry's xattrs to an open file; `clear` first removes
    /// those already there (directories merged over lower ones).
    pub(super) fn xattrs_fd(&self, fd: BorrowedFd<'_>, xattrs: &[(Vec<u8>, Vec<u8>)], clear: bool) {
        if clear {
            for name in fs::list_xattrs(fd) {
                if self.owner.keeps_xattr(&name) {
                    continue;
                }
                if let Ok(c) = CString::new(name) {
                    fs::remove_xattr(fd, &c);
                }
            }
        }
        self.apply_xattrs(xattrs, &|name, value| self.set_xattr(fd, name, value));
    }

    /// The xattr policy: which of an entry's xattrs are applied (by `set`).
    pub(super) fn apply_xattrs(&self, xattrs: &[(Vec<u8>, Vec<u8>)], set: &dyn Fn(&[u8], &[u8])) {
        for (k, v) in xattrs {
            match k.as_slice() {
                b"security.selinux" | b"system.nfs4_acl" => {
                    self.skip(format!("{} is host-specific", String::from_utf8_lossy(k)));
                }
                k if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") => {
                    self.skip("overlayfs xattrs are not applied to a plain directory".into());
                }
                k => match self.owner.refuses_xattr(k) {
                    Some(why) => self.skip(why.into()),
                    None => set(k, v),
                },
            }
        }
    }

    /// Writes a regular file's data into the spool and applies its metadata.
    fn spool<R: io::Read>(
        &self,
        tar: &mut TarReader<R>,
        e: &Entry,
        name: &str,
        buf: &mut [u8],
    ) -> Result<Spooled, String> {
        use std::os::unix::fs::FileExt;
        let cname = cstring(name.as_bytes())?;
        let fd = fs::create_file(self.spool.as_fd(), &cname)
            .map_err(|e| format!("create spool file: {e}"))?;
        let mut file = File::from(fd);
        let map = e.sparse.clone().unwrap_or_default();
        let (mut frag, mut in_frag) = (0usize, 0u64);
        loop {
            let n = tar.read_data(buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            if e.sparse.is_none() {
                file.write_all(&buf[..n])
                    .map_err(|e| format!("write: {e}"))?;
                continue;
            }
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let Some(&(off, len)) = map.get(frag) else {
                    return Err("sparse data beyond its map".into());
                };
                let take = usize::try_from(len - in_frag)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                file.write_all_at(&rest[..take], off + in_frag)
                    .map_err(|e| format!("write: {e}"))?;
                in_frag += take as u64;
                rest = &rest[take..];
                if in_frag == len {
                    frag += 1;
                    in_frag = 0;
                }
            }
        }
        if e.sparse.is_some() {
            file.set_len(e.size).map_err(|e| format!("set size: {e}"))?;
        }
        let fd = file.as_fd();
        let record = self.owner_fd(fd, e.uid, e.gid)?.map(|(uid, gid)| Record {
            uid,
            gid,
            mode: self.readable.then_some(e.mode),
        });
        let mode = if self.readable {
            e.mode | 0o600
        } else {
            e.mode
        };
        fs::chmod_fd(fd, mode).map_err(|e| fs::os_err("chmod", e))?;
        self.xattrs_fd(fd, &e.xattrs, false);
        fs::times_fd(fd, e.mtime, e.mtime_nsec).map_err(|e| fs::os_err("set times", e))?;
        let st = fs::fstat(fd)?;
        Ok(Spooled {
            name: cname,
            dev: st.st_dev,
            ino: st.st_ino,
            record,
        })
    }
}

/// Decodes layer `index` into `tx`, writing regular files' data into the
/// spool; stops early if the receiver is gone.
fn decode_layer(
    store: &dyn Store,
    input: &Layer,
    index: usize,
    shared: &Shared,
    progress: &dyn crate::progress::Progress,
    tx: &SyncSender<Msg>,
) {
    let result = (|| -> Result<Option<LayerDigests>, LayerError> {
        let limit = shared.limits.decompression(input.size);
        let mut buf = vec![0u8; CHUNK];
        // Holes of sparse files count towards the limit: a tiny sparse member
        // can claim terabytes, and `--tar` writes them out in full.
        let mut holes = 0u64;
        let walked = input.walk(store, &shared.limits, progress, |tar, e| {
            if let Some(map) = &e.sparse {
                let data: u64 = map.iter().map(|&(_, n)| n).sum();
                holes = holes.saturating_add(e.size.saturating_sub(data));
                if holes > limit {
                    return Err(LayerError::TooLarge { limit });
                }
            }
            // Whiteout names (also invalid and AUFS ones) carry no data.
            let whiteout = whiteout::classify_path(&e.path).is_marker();
            let spooled = if e.kind == EntryKind::Regular && !whiteout {
                let name = format!("{index}-{}", tar.entries());
                let s = shared.spool(tar, &e, &name, &mut buf).map_err(|reason| {
                    LayerError::Io(io::Error::other(format!(
                        "entry {:?}: {reason}",
                        e.display_name()
                    )))
                })?;
                Some(s)
            } else {
                None
            };
            if shared.cancel.is_cancelled() || tx.send(Msg::Entry(Box::new(e), spooled)).is_err() {
                return Ok(layer::Visit::Stop);
            }
            Ok(layer::Visit::Continue)
        })?;
        Ok(walked)
    })();
    match result {
        Ok(None) => {}
        Ok(Some(d)) => {
            let _ = tx.send(Msg::End(Box::new(Ok(d))));
        }
        Err(e) => {
            let _ = tx.send(Msg::End(Box::new(Err(e))));
        }
    }
}

/// Decodes `inputs` in parallel and applies them in order with `applier`,
/// adding entry and byte counts to `report`.
pub(super) fn run(
    store: &dyn Store,
    inputs: &[Layer],
    shared: &Shared,
    applier: &mut Applier<'_>,
    dir: &Path,
    progress: &dyn crate::progress::Progress,
    report: &mut FlattenReport,
) -> Result<(), FlattenError> {
    let count = inputs.len();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
        .min(count.max(1));
    // Layers in flight: a decoder takes a layer only once the applier has
    // handed it out, and the applier hands out layer i + WINDOW only after
    // applying layer i. Each layer's channel is created then and dropped
    // once applied, so memory does not grow with the layer count.
    let window = workers * 2;
    let (job_tx, job_rx) = sync_channel::<(usize, SyncSender<Msg>)>(window + 1);
    let job_rx = Mutex::new(job_rx);
    progress.begin(inputs.iter().map(|l| l.size).sum());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let job = match job_rx.lock() {
                    Ok(g) => g.recv(),
                    Err(_) => break,
                };
                let Ok((i, tx)) = job else { break };
                decode_layer(store, &inputs[i], i, shared, progress, &tx);
            });
        }
        // Hands layer `i` to the decoders; returns its receiving end.
        let hand_out = |i: usize| -> Option<Receiver<Msg>> {
            let (tx, rx) = sync_channel::<Msg>(CHANNEL);
            job_tx.send((i, tx)).ok().map(|()| rx)
        };
        let mut receivers = std::collections::VecDeque::with_capacity(window + 1);
        for i in 0..window.min(count) {
            receivers.extend(hand_out(i));
        }
        let result = (|| {
            for (i, input) in inputs.iter().enumerate() {
                if i + window < count {
                    receivers.extend(hand_out(i + window));
                }
                let Some(rx) = receivers.pop_front() else {
                    return Err(FlattenError::Output {
                        path: dir.to_path_buf(),
                        reason: format!("layer {} was never decoded", i + 1),
                    });
                };
                let digest = input.digest.to_string();
                let d =
                    applier
                        .apply_layer(&rx)
                        .map_err(|(entry, reason)| FlattenError::Entry {
                            index: i + 1,
                            count,
                            digest: digest.clone(),
                            entry,
                            reason,
                        })?;
                match d {
                    Ok(d) => {
                        report.entries += d.entries;
                        report.bytes += d.uncompressed_size;
                    }
                    Err(source) => {
                        return Err(FlattenError::Layer {
                            index: i + 1,
                            count,
                            digest,
                            source,
                        })
                    }
                }
            }
            applier
                .finish_dirs()
                .map_err(|reason| FlattenError::Output {
                    path: dir.to_path_buf(),
                    reason,
                })
        })();
        // Stop the workers: no more layers, and if the applier stopped
        // early, their sends fail.
        drop(job_tx);
        drop(receivers);
        result
    })
}
