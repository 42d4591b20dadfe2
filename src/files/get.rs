//! `get-file`: one file's bytes, reading layers newest first and stopping
//! at the first that decides the path (see the module above and
//! docs/decisions.md, "get-file and files").

use super::*;
/// What a layer's entry says about a path, in layer order.
#[derive(Debug, Clone)]
enum What {
    /// An entry at the path (a hardlink keeps its kind `None` and target).
    Entry { rec: Rec, hardlink: Option<Vec<u8>> },
    /// `.wh.<name>`: the path is deleted from lower layers.
    Whiteout,
    /// `.wh..wh..opq` in the directory at the path.
    Opaque,
}

/// One layer's entries, as [`get_file`] keeps them (no data).
struct Indexed {
    /// The layer's position, base first, from 0.
    layer: usize,
    /// (normalised path without a leading `/`, what), in layer order.
    entries: Vec<(Box<[u8]>, What)>,
    /// The data captured for the wanted path: (position, file).
    captured: Vec<(usize, File)>,
}

/// The decision one layer makes about a path.
enum Decision {
    /// Lower layers decide.
    Lower,
    /// Not present: what removed it.
    Absent(String),
    /// Present: the entry's position and record (and hardlink target).
    Present(usize, Rec, Option<Vec<u8>>),
}

fn is_ancestor(a: &[u8], p: &[u8]) -> bool {
    a.is_empty() || (p.len() > a.len() && p.starts_with(a) && p[a.len()] == b'/')
}

/// What the entries of one layer before `before` decide about `p` (see
/// docs/decisions.md).
fn decide(ix: &Indexed, p: &[u8], before: usize) -> Decision {
    let mut state = Decision::Lower;
    for (pos, (path, what)) in ix.entries.iter().enumerate().take(before) {
        let path = &path[..];
        if !p.is_empty() && is_ancestor(p, path) {
            // An entry under `p` makes `p` a directory here (implied if it
            // has no entry of its own, or replacing a non-directory this
            // layer wrote); markers under `p` create nothing.
            let dir_now =
                matches!(&state, Decision::Present(_, r, None) if r.kind == FileType::Dir);
            if matches!(what, What::Entry { .. }) && !dir_now {
                state = Decision::Present(pos, Rec::implied(ix.layer), None);
            }
            continue;
        }
        if path == p {
            match what {
                What::Entry { rec, hardlink } => {
                    state = Decision::Present(pos, rec.clone(), hardlink.clone())
                }
                What::Whiteout => {
                    if let Decision::Lower = state {
                        state = Decision::Absent(format!(
                            "deleted by a whiteout in layer {}",
                            rec_layer(ix)
                        ));
                    }
                }
                What::Opaque => {}
            }
        } else if is_ancestor(path, p) {
            // Was the ancestor touched earlier in this layer?
            let touched = || {
                ix.entries[..pos]
                    .iter()
                    .any(|(q, w)| &q[..] == path && matches!(w, What::Entry { .. }))
            };
            match what {
                What::Entry { rec, .. } if rec.kind != FileType::Dir => {
                    state = Decision::Absent(format!(
                        "/{} is replaced by a non-directory in layer {}",
                        String::from_utf8_lossy(path),
                        rec_layer(ix)
                    ));
                }
                What::Entry { .. } => {}
                What::Whiteout => {
                    if matches!(state, Decision::Lower) && !touched() {
                        state = Decision::Absent(format!(
                            "/{} is deleted by a whiteout in layer {}",
                            String::from_utf8_lossy(path),
                            rec_layer(ix)
                        ));
                    }
                }
                What::Opaque => {
                    if matches!(state, Decision::Lower) {
                        state = Decision::Absent(format!(
                            "hidden by an opaque whiteout in /{} in layer {}",
                            String::from_utf8_lossy(path),
                            rec_layer(ix)
                        ));
                    }
                }
            }
        }
    }
    state
}

fn rec_layer(ix: &Indexed) -> usize {
    ix.layer + 1
}

/// Options of [`get_file`].
#[derive(Debug, Clone, Default)]
pub struct GetFileOptions {
    /// Return a symlink in the path's last component itself.
    pub no_follow: bool,
    /// Limits and cancellation.
    pub files: FilesOptions,
}

/// What [`get_file`] found.
#[derive(Debug, Clone, Serialize)]
pub struct GetFileReport {
    /// Always [`crate::report::SCHEMA_VERSION`].
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The path asked for.
    pub requested: String,
    /// The entry found (its path after symlinks are resolved).
    #[serde(flatten)]
    pub entry: FileEntry,
    /// The layer whose entry provided the content (for a hardlink, its
    /// target's layer).
    pub content_layer: usize,
    /// Layers in the image.
    pub layers: usize,
    /// Layers read, newest first (each read to its end and verified).
    pub layers_read: usize,
    /// Symlinks followed.
    pub symlinks_followed: usize,
}

/// A regular file's content, as [`get_file`] found it (an unnamed
/// temporary file); empty for other types.
pub struct Content(Option<File>);

impl Content {
    /// Copies the content into `out`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn copy_to(self, out: &mut dyn Write) -> io::Result<u64> {
        match self.0 {
            Some(mut f) => {
                f.rewind()?;
                io::copy(&mut f, out)
            }
            None => Ok(0),
        }
    }
}

struct Reader<'a> {
    store: &'a dyn Store,
    layers: Vec<Layer>,
    options: &'a FilesOptions,
    /// Indexes of the layers read so far, newest first.
    read: Vec<Indexed>,
}

impl Reader<'_> {
    fn count(&self) -> usize {
        self.layers.len()
    }

    /// Reads the next layer down (to its end), capturing the data of
    /// regular entries at `want`.
    fn read_next(&mut self, want: &[u8]) -> Result<(), FilesError> {
        let i = self.count() - 1 - self.read.len();
        let l = &self.layers[i];
        let mut ix = Indexed {
            layer: i,
            entries: Vec::new(),
            captured: Vec::new(),
        };
        let mut buf = vec![0u8; IO_BUFFER];
        let mut failed: Option<FilesError> = None;
        let mut links: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let options = self.options;
        let walked = l
            .walk(self.store, &options.limits, &(), |tar, e| {
                if options.cancel.is_cancelled() {
                    failed = Some(FilesError::Interrupted);
                    return Ok(Visit::Stop);
                }
                let comps = match clean_name(&e.path) {
                    Ok(c) => c,
                    Err(reason) => {
                        failed = Some(FilesError::Entry {
                            index: i,
                            entry: e.display_name(),
                            reason,
                        });
                        return Ok(Visit::Stop);
                    }
                };
                let Some((base, parents)) = comps.split_last() else {
                    if let Some(k) = FileType::of(e.kind) {
                        ix.entries.push((
                            Box::from(&b""[..]),
                            What::Entry {
                                rec: Rec::of(&e, k, i),
                                hardlink: None,
                            },
                        ));
                    }
                    return Ok(Visit::Continue);
                };
                // Parents resolve through the symlinks this layer made
                // earlier (as flatten applies them); not through lower ones.
                let mut parent = parents.join(&b'/');
                if !links.is_empty() && under_a_link(&links, &parent) {
                    parent = through_links(&links, parents);
                }
                let join = |name: &[u8]| -> Box<[u8]> {
                    let mut p = parent.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(name);
                    p.into_boxed_slice()
                };
                let (path, what) = match whiteout::classify(base) {
                    Marker::Opaque => (parent.clone().into_boxed_slice(), What::Opaque),
                    Marker::Delete(t) => (join(t), What::Whiteout),
                    Marker::Metadata => return Ok(Visit::Continue),
                    Marker::Invalid => {
                        failed = Some(FilesError::Entry {
                            index: i,
                            entry: e.display_name(),
                            reason: "invalid whiteout name".into(),
                        });
                        return Ok(Visit::Stop);
                    }
                    Marker::None => {
                        let path = join(base);
                        let what = match (e.kind, FileType::of(e.kind)) {
                            (EntryKind::Hardlink, _) => match clean_name(&e.link) {
                                Ok(t) => What::Entry {
                                    rec: Rec::of(&e, FileType::File, i),
                                    hardlink: Some(t.join(&b'/')),
                                },
                                Err(r) => {
                                    failed = Some(FilesError::Entry {
                                        index: i,
                                        entry: e.display_name(),
                                        reason: format!("hardlink target: {r}"),
                                    });
                                    return Ok(Visit::Stop);
                                }
                            },
                            (_, Some(k)) => What::Entry {
                                rec: Rec::of(&e, k, i),
                                hardlink: None,
                            },
                            (_, None) => return Ok(Visit::Continue),
                        };
                        if e.kind == EntryKind::Regular && &path[..] == want {
                            match capture(tar, &e, &mut buf, i) {
                                Ok(f) => ix.captured.push((ix.entries.len(), f)),
                                Err(err) => {
                                    failed = Some(err);
                                    return Ok(Visit::Stop);
                                }
                            }
                        }
                        (path, what)
                    }
                };
                match &what {
                    What::Entry {
                        rec,
                        hardlink: None,
                    } if rec.kind == FileType::Symlink => {
                        let t = rec.link.as_deref().unwrap_or_default().to_vec();
                        links.insert(path.to_vec(), t);
                    }
                    What::Opaque => {}
                    _ if !links.is_empty() => {
                        links.remove(&path[..]);
                    }
                    _ => {}
                }
                ix.entries.push((path, what));
                Ok(Visit::Continue)
            })
            .map_err(layer_err(l))?;
        if let Some(f) = failed {
            return Err(f);
        }
        not_stopped(l, walked)?;
        self.read.push(ix);
        Ok(())
    }

    /// The entry at the lexical path `p` (parents already resolved), as
    /// the layers from `from` (newest-first position) down decide it; for
    /// the layer at `from`, only entries before `before`. Layers read on
    /// the way capture the data of a regular entry at `want`.
    fn lookup(
        &mut self,
        want: &[u8],
        p: &[u8],
        from: usize,
        mut before: usize,
    ) -> Result<Result<Found, String>, FilesError> {
        let mut k = from;
        while k < self.count() {
            if k >= self.read.len() {
                self.read_next(want)?;
            }
            match decide(&self.read[k], p, before) {
                Decision::Lower => {}
                Decision::Absent(why) => return Ok(Err(why)),
                Decision::Present(pos, rec, hl) => return Ok(Ok((k, pos, rec, hl))),
            }
            k += 1;
            before = usize::MAX;
        }
        Ok(Err("not in any layer".into()))
    }
}

/// Whether `parent` or one of its parents is a key of `links`.
fn under_a_link(links: &HashMap<Vec<u8>, Vec<u8>>, parent: &[u8]) -> bool {
    parent
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| &parent[..i])
        .chain(std::iter::once(parent))
        .any(|p| links.contains_key(p))
}

/// `comps` with the symlinks in `links` (path → target, made earlier in
/// the same layer) followed, clamped at the root; as written after
/// [`MAX_SYMLINKS`] hops.
fn through_links(links: &HashMap<Vec<u8>, Vec<u8>>, comps: &[Vec<u8>]) -> Vec<u8> {
    let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().cloned().collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = queue.pop_front() {
        match &c[..] {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        if let Some(t) = links.get(&done.join(&b'/')) {
            hops += 1;
            if hops > MAX_SYMLINKS {
                return comps.join(&b'/');
            }
            done.pop();
            if t.starts_with(b"/") {
                done.clear();
            }
            for x in t.split(|&b| b == b'/').rev() {
                queue.push_front(x.to_vec());
            }
        }
    }
    done.join(&b'/')
}

/// A lookup's result: (newest-first layer position, entry position, record,
/// hardlink target).
type Found = (usize, usize, Rec, Option<Vec<u8>>);

/// The path the lookup is heading for when no further symlink is met:
/// `resolved` and the components still queued, cleaned (so a layer read
/// for a parent captures the file's data on the way).
fn final_guess(resolved: &[Vec<u8>], queue: &std::collections::VecDeque<Vec<u8>>) -> Vec<u8> {
    let mut out: Vec<&[u8]> = resolved.iter().map(Vec::as_slice).collect();
    for c in queue {
        match &c[..] {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join(&b'/')
}

/// Writes an entry's data (sparse maps expanded) into an unnamed
/// temporary file.
fn capture<R: Read>(
    tar: &mut crate::tarstream::TarReader<R>,
    e: &Entry,
    buf: &mut [u8],
    index: usize,
) -> Result<File, FilesError> {
    let file = tempfile::tempfile()?;
    let map = e.sparse.clone().unwrap_or_default();
    let (mut frag, mut in_frag, mut off) = (0usize, 0u64, 0u64);
    let mut werr: Option<io::Error> = None;
    layer::read_entry_data(tar, buf, |chunk| {
        if werr.is_some() {
            return;
        }
        if e.sparse.is_none() {
            if let Err(x) = file.write_all_at(chunk, off) {
                werr = Some(x);
            }
            off += chunk.len() as u64;
            return;
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            let Some(&(o, len)) = map.get(frag) else {
                werr = Some(io::Error::other("sparse data beyond its map"));
                return;
            };
            let take = usize::try_from(len - in_frag)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            if let Err(x) = file.write_all_at(&rest[..take], o + in_frag) {
                werr = Some(x);
                return;
            }
            in_frag += take as u64;
            rest = &rest[take..];
            if in_frag == len {
                frag += 1;
                in_frag = 0;
            }
        }
    })
    .map_err(|source| FilesError::Entry {
        index,
        entry: e.display_name(),
        reason: source.to_string(),
    })?;
    if let Some(x) = werr {
        return Err(FilesError::Io(x));
    }
    if e.sparse.is_some() {
        file.set_len(e.size)?;
    }
    Ok(file)
}

/// One file of the flattened tree and its content, reading layers newest
/// first and stopping below the first layer that decides the path.
///
/// # Errors
/// [`FilesError::NotFound`], [`FilesError::IsDirectory`],
/// [`FilesError::SymlinkLoop`], and read errors.
pub fn get_file(
    store: &dyn Store,
    image: &Image,
    path: &[u8],
    options: &GetFileOptions,
) -> Result<(GetFileReport, Content), FilesError> {
    let layers = image.typed_layers(store)?;
    let count = layers.len();
    let mut r = Reader {
        store,
        layers,
        options: &options.files,
        read: Vec::new(),
    };
    let requested = String::from_utf8_lossy(path).into_owned();
    let not_found = |why: Option<String>| FilesError::NotFound {
        path: requested.clone(),
        why,
    };
    if path.len() > crate::flatten::MAX_PATH {
        return Err(FilesError::BadPath {
            path: requested.clone(),
            reason: "the path is too long".into(),
        });
    }
    let mut queue: std::collections::VecDeque<Vec<u8>> =
        path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0usize;
    loop {
        let Some(c) = queue.pop_front() else {
            // The path names the root, or ends in a directory.
            return Err(FilesError::IsDirectory { path: requested });
        };
        if c.is_empty() || c == b"." {
            continue;
        }
        if c == b".." {
            resolved.pop();
            continue;
        }
        let last = queue.iter().all(|q| q.is_empty() || q == b".");
        resolved.push(c);
        let p = resolved.join(&b'/');
        let (k, pos, rec, hardlink) =
            match r.lookup(&final_guess(&resolved, &queue), &p, 0, usize::MAX)? {
                Ok(found) => found,
                Err(why) => {
                    return Err(not_found(Some(format!(
                        "/{}: {why}",
                        String::from_utf8_lossy(&p)
                    ))))
                }
            };
        // A hardlink: its target as it was just before the link entry.
        let (k, pos, rec, content_from) = match hardlink {
            None => (k, pos, rec, None),
            Some(mut target) => {
                let (mut tk, mut tpos) = (k, pos);
                let mut links = 0;
                loop {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FilesError::SymlinkLoop { path: requested });
                    }
                    match r.lookup(&target, &target, tk, tpos)? {
                        Ok((k2, pos2, rec2, None)) => {
                            let mut out = rec2;
                            out.hardlink = Some(target.clone().into_boxed_slice());
                            out.layer = rec.layer;
                            break (k, pos, out, Some((k2, pos2, target)));
                        }
                        Ok((k2, pos2, _, Some(t2))) => {
                            target = t2;
                            tk = k2;
                            tpos = pos2;
                        }
                        Err(_) => {
                            return Err(FilesError::Entry {
                                index: rec.layer as usize,
                                entry: display_path(&p),
                                reason: format!(
                                    "hardlink target {} does not exist",
                                    display_path(&target)
                                ),
                            })
                        }
                    }
                }
            }
        };
        match rec.kind {
            FileType::Dir => {
                if last {
                    return Err(FilesError::IsDirectory { path: requested });
                }
                continue;
            }
            FileType::Symlink if !(last && options.no_follow) => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(FilesError::SymlinkLoop { path: requested });
                }
                resolved.pop();
                let target = rec.link.clone().unwrap_or_default();
                if target.starts_with(b"/") {
                    resolved.clear();
                }
                for t in target.split(|&b| b == b'/').rev() {
                    queue.push_front(t.to_vec());
                }
                continue;
            }
            _ if !last => {
                return Err(not_found(Some(format!(
                    "{} is not a directory",
                    display_path(&p)
                ))))
            }
            _ => {}
        }
        // Found: the content.
        let (ck, cpos, cpath) = content_from.unwrap_or((k, pos, p.clone()));
        let content = if rec.kind == FileType::File {
            Some(r.content(ck, cpos, &cpath)?)
        } else {
            None
        };
        let content_layer = count - 1 - ck;
        let entry = rec.report(&p);
        return Ok((
            GetFileReport {
                schema_version: crate::report::SCHEMA_VERSION,
                requested,
                entry,
                content_layer,
                layers: count,
                layers_read: r.read.len(),
                symlinks_followed: hops,
            },
            Content(content),
        ));
    }
}

impl Reader<'_> {
    /// The data of the regular entry at `pos` in read layer `k` (captured
    /// when read, or read again to the end of that layer).
    fn content(&mut self, k: usize, pos: usize, path: &[u8]) -> Result<File, FilesError> {
        if let Some(i) = self.read[k].captured.iter().position(|(p, _)| *p == pos) {
            return Ok(self.read[k].captured.swap_remove(i).1);
        }
        // Read that layer again, capturing this entry, to its end (verified).
        let index = self.count() - 1 - k;
        let l = &self.layers[index];
        let mut buf = vec![0u8; IO_BUFFER];
        let mut seen = 0usize;
        let mut got: Option<File> = None;
        let mut failed: Option<FilesError> = None;
        let walked = l
            .walk(self.store, &self.options.limits, &(), |tar, e| {
                let marker = whiteout::classify_path(&e.path);
                let counted = match clean_name(&e.path) {
                    Ok(c) if c.is_empty() => FileType::of(e.kind).is_some(),
                    Ok(_) => match marker {
                        Marker::Metadata => false,
                        Marker::None => {
                            e.kind == EntryKind::Hardlink || FileType::of(e.kind).is_some()
                        }
                        _ => true,
                    },
                    Err(_) => false,
                };
                if !counted {
                    return Ok(Visit::Continue);
                }
                if seen == pos && e.kind == EntryKind::Regular {
                    match capture(tar, &e, &mut buf, index) {
                        Ok(f) => got = Some(f),
                        Err(x) => {
                            failed = Some(x);
                            return Ok(Visit::Stop);
                        }
                    }
                }
                seen += 1;
                Ok(Visit::Continue)
            })
            .map_err(layer_err(l))?;
        if let Some(f) = failed {
            return Err(f);
        }
        not_stopped(l, walked)?;
        got.ok_or_else(|| FilesError::Entry {
            index,
            entry: display_path(path),
            reason: "the layer changed between two reads".into(),
        })
    }
}
