//! LOCATION strings: `[transport:]PATH[:REF]`, in skopeo's spelling.
//!
//! Splitting after the optional transport prefix (`oci:`, `oci-archive:`,
//! `docker-archive:`):
//! 1. a trailing `@<alg>:<encoded>` is a digest REF and the rest is PATH;
//! 2. otherwise, if the whole string is an existing path, it is PATH with no REF;
//! 3. otherwise PATH is the longest prefix before a `:` that exists, and the rest is REF;
//! 4. otherwise (a target that does not exist yet) PATH ends at the first `:`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestError};

// Opening a location (the methods on [`Location`] in the private `open`
// module) and Docker's familiar names.
pub use crate::docker::familiar;
pub use crate::open::{Notice, OpenError, Target};

/// How a location's content is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An OCI image-layout directory (`oci:`).
    Oci,
    /// A tarball of a layout (`oci-archive:`).
    OciArchive,
    /// `docker save` output (`docker-archive:`).
    DockerArchive,
    /// No prefix: detected from what PATH is.
    Auto,
}

impl Transport {
    /// The prefix as written, without the colon (`""` for [`Transport::Auto`]).
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
            Transport::DockerArchive => "docker-archive",
            Transport::Auto => "",
        }
    }
}

/// What REF names inside a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag (`org.opencontainers.image.ref.name`) or docker RepoTag.
    Tag(String),
    /// A content digest.
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// A parsed LOCATION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The transport (explicit or [`Transport::Auto`]).
    pub transport: Transport,
    /// The file or directory.
    pub path: PathBuf,
    /// The optional REF.
    pub reference: Option<Reference>,
}

/// Why a LOCATION string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// Nothing before the REF.
    #[error("location {0:?} has no path")]
    EmptyPath(String),
    /// A `:` with nothing after it.
    #[error("location {0:?} ends with ':' but names no reference after it")]
    EmptyReference(String),
    /// `@…` that looks like a digest but is not a valid one.
    #[error("location {location:?}: {source}")]
    BadDigest {
        /// The location string.
        location: String,
        /// The digest problem.
        source: DigestError,
    },
}

impl Location {
    /// Parses a LOCATION, checking the file system for rules 2 and 3.
    ///
    /// # Errors
    /// See [`LocationError`].
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        Location::parse_with(s, |p| p.symlink_metadata().is_ok())
    }

    /// Parses a LOCATION with `exists` standing in for the file system.
    ///
    /// # Errors
    /// See [`LocationError`].
    pub fn parse_with(s: &str, exists: impl Fn(&Path) -> bool) -> Result<Location, LocationError> {
        let (transport, rest) = [
            Transport::Oci,
            Transport::OciArchive,
            Transport::DockerArchive,
        ]
        .into_iter()
        .find_map(|t| {
            s.strip_prefix(t.prefix())
                .and_then(|r| r.strip_prefix(':'))
                .map(|r| (t, r))
        })
        .unwrap_or((Transport::Auto, s));

        let done = |path: &str, reference: Option<Reference>| {
            if path.is_empty() {
                return Err(LocationError::EmptyPath(s.to_string()));
            }
            Ok(Location {
                transport,
                path: PathBuf::from(path),
                reference,
            })
        };

        // Rule 1: a trailing @alg:encoded.
        if let Some(at) = rest.rfind('@') {
            let (path, tail) = (&rest[..at], &rest[at + 1..]);
            if looks_like_digest(tail) && !exists(Path::new(rest)) {
                let d = Digest::parse(tail).map_err(|source| LocationError::BadDigest {
                    location: s.to_string(),
                    source,
                })?;
                return done(path, Some(Reference::Digest(d)));
            }
        }
        // Rule 2: the whole string exists.
        if exists(Path::new(rest)) {
            return done(rest, None);
        }
        // Rule 3: the longest existing prefix before a ':'.
        for (i, _) in rest
            .match_indices(':')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if i > 0 && exists(Path::new(&rest[..i])) {
                return split_at(s, rest, i, done);
            }
        }
        // Rule 4: a new target ends at the first ':'.
        match rest.find(':') {
            Some(i) => split_at(s, rest, i, done),
            None => done(rest, None),
        }
    }

    /// The location written back as a string.
    pub fn display(&self) -> String {
        let mut out = String::new();
        if self.transport != Transport::Auto {
            out.push_str(self.transport.prefix());
            out.push(':');
        }
        out.push_str(&self.path.to_string_lossy());
        match &self.reference {
            Some(Reference::Tag(t)) => {
                out.push(':');
                out.push_str(t);
            }
            Some(Reference::Digest(d)) => {
                out.push('@');
                out.push_str(&d.to_string());
            }
            None => {}
        }
        out
    }
}

fn split_at(
    s: &str,
    rest: &str,
    i: usize,
    done: impl Fn(&str, Option<Reference>) -> Result<Location, LocationError>,
) -> Result<Location, LocationError> {
    let tag = &rest[i + 1..];
    if tag.is_empty() {
        return Err(LocationError::EmptyReference(s.to_string()));
    }
    done(&rest[..i], Some(Reference::Tag(tag.to_string())))
}

/// `alg:` with a grammar-shaped algorithm: worth parsing strictly as a digest.
fn looks_like_digest(tail: &str) -> bool {
    match tail.split_once(':') {
        Some((alg, _)) => {
            !alg.is_empty()
                && alg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        }
        None => false,
    }
}

/// Whether `name` is valid as an `org.opencontainers.image.ref.name` that
/// ocikit writes (the annotations.md grammar).
pub(crate) fn is_valid_ref_name(name: &str) -> bool {
    // ref ::= component ("/" component)*; component ::= alnum (sep alnum)*;
    // sep ::= [-._:@+] | "--"
    if name.is_empty() || name.len() > 4096 {
        return false;
    }
    name.split('/').all(|comp| {
        let b = comp.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            // a separator: one of [-._:@+] or "--", followed by an alnum
            let sep_len = if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
                2
            } else if b"-._:@+".contains(&b[i]) {
                1
            } else {
                return false;
            };
            i += sep_len;
            if !b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
                return false;
            }
        }
        true
    })
}

/// A docker image name normalised as docker does (`busybox` →
/// `docker.io/library/busybox:latest`), or `None` if `name` is not a docker
/// reference. Digest references (`name@sha256:…`) keep their digest.
pub(crate) fn normalize_docker_name(name: &str) -> Option<String> {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    // The tag is after the last ':' that comes after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if repo.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    let has_domain = parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    let domain = if has_domain {
        parts.remove(0).to_string()
    } else {
        "docker.io".to_string()
    };
    let path_ok = parts.iter().all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    });
    if !path_ok {
        return None;
    }
    let mut path = parts.join("/");
    if domain == "docker.io" && parts.len() == 1 {
        path = format!("library/{path}");
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            if t.is_empty() {
                return None;
            }
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn parse(s: &str, existing: &[&str]) -> Location {
        Location::parse_with(s, |p| existing.iter().any(|e| Path::new(e) == p)).unwrap()
    }

    fn tag(t: &str) -> Option<Reference> {
        Some(Reference::Tag(t.into()))
    }

    #[test]
    fn transports_and_rules() {
        let l = parse("oci:/a/b:latest", &["/a/b"]);
        assert_eq!(l.transport, Transport::Oci);
        assert_eq!(l.path, PathBuf::from("/a/b"));
        assert_eq!(l.reference, tag("latest"));

        // Rule 1: digest.
        let l = parse(&format!("oci-archive:x.tar@{D}"), &["x.tar"]);
        assert_eq!(l.transport, Transport::OciArchive);
        assert_eq!(l.reference, Some(Reference::Digest(D.parse().unwrap())));
        // Rule 2: an existing path with ':' in it.
        let l = parse("dir:with:colons", &["dir:with:colons", "dir"]);
        assert_eq!(l.path, PathBuf::from("dir:with:colons"));
        assert_eq!(l.reference, None);
        // Rule 3: the longest existing prefix.
        let l = parse("a:b:reg:5000/x:1.2", &["a", "a:b"]);
        assert_eq!(l.path, PathBuf::from("a:b"));
        assert_eq!(l.reference, tag("reg:5000/x:1.2"));
        // docker-style refs after an existing archive.
        let l = parse(
            "docker-archive:save.tar:registry:5000/team/app:1.2",
            &["save.tar"],
        );
        assert_eq!(l.reference, tag("registry:5000/team/app:1.2"));
        // Rule 4: not existing, first ':'.
        let l = parse("new/layout:v1:extra", &[]);
        assert_eq!(l.path, PathBuf::from("new/layout"));
        assert_eq!(l.reference, tag("v1:extra"));
        let l = parse("plain", &[]);
        assert_eq!((l.path, l.reference), (PathBuf::from("plain"), None));
        // A prefix-looking directory name without the colon is a path.
        let l = parse("oci", &["oci"]);
        assert_eq!(l.transport, Transport::Auto);
    }

    #[test]
    fn location_errors() {
        let none = |_: &Path| false;
        assert!(matches!(
            Location::parse_with("oci:", none),
            Err(LocationError::EmptyPath(_))
        ));
        assert!(matches!(
            Location::parse_with("x:", none),
            Err(LocationError::EmptyReference(_))
        ));
        assert!(matches!(
            Location::parse_with("x@sha256:abc", none),
            Err(LocationError::BadDigest { .. })
        ));
        assert!(matches!(
            Location::parse_with("x@sha256:../../etc/passwd", none),
            Err(LocationError::BadDigest { .. })
        ));
    }

    #[test]
    fn ref_name_grammar() {
        for ok in [
            "latest",
            "1.0",
            "v1.2.3-rc1",
            "a/b/c",
            "reg:5000/x",
            "a--b",
            "A_b",
        ] {
            assert!(is_valid_ref_name(ok), "{ok}");
        }
        for bad in ["", "-x", "x-", "a//b", "a b", "a..b", "ä", "a/", "a---b"] {
            assert!(!is_valid_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn docker_normalisation() {
        let n = |s| normalize_docker_name(s);
        assert_eq!(
            n("busybox").as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert_eq!(
            n("busybox:1").as_deref(),
            Some("docker.io/library/busybox:1")
        );
        assert_eq!(n("team/app:2").as_deref(), Some("docker.io/team/app:2"));
        assert_eq!(
            n("registry:5000/team/app:1.2").as_deref(),
            Some("registry:5000/team/app:1.2")
        );
        assert_eq!(n("localhost/x").as_deref(), Some("localhost/x:latest"));
        assert_eq!(n("Upper"), None);
    }
}
