//! `prune`: retention policies for a layout's tags, then [`gc`](crate::gc).
//!
//! The policy evaluation ([`plan_tags`]) is a pure function over [`TagInfo`]s;
//! [`prune`] reads the tags' times from the layout, untags what the plan drops
//! under the writer lock and runs gc with its safety.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::Serialize;

use crate::digest::Digest;
use crate::gc::{GcError, GcOptions, GcReport};
use crate::layout::{Layout, LayoutError};
use crate::spec::MAX_DOCUMENT_SIZE;
use crate::store::{Store, StoreError};

/// Why prune refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    /// No policy was given: prune never drops everything by accident.
    #[error("prune needs at least one policy (--keep-last, --keep-semver or --older-than)")]
    NoPolicy,
    /// `--match` is not a regular expression.
    #[error("--match {0:?}: {1}")]
    Regex(String, String),
    /// `--keep-semver` is not a semver range.
    #[error("--keep-semver {0:?}: {1}")]
    Range(String, String),
    /// `--older-than` is not a duration.
    #[error("--older-than {0:?}: want a number and a unit (m, h, d, w), like 30d")]
    Duration(String),
    /// Reading or writing the layout failed.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// gc refused or failed after the names were taken off (that stands).
    #[error("untagged {}, then gc: {source}", if untagged.is_empty() { "nothing".to_string() } else { untagged.join(", ") })]
    Gc {
        /// The names already taken off.
        untagged: Vec<String>,
        /// gc's error.
        source: Box<GcError>,
    },
}

/// The order `--keep-last` counts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// The config's `created` time.
    #[default]
    Created,
    /// Semantic version (unparsable versions are oldest).
    Semver,
    /// Name.
    Name,
}

/// Options of [`prune`].
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Only tags this regex matches are candidates (`None`: every tag).
    pub matching: Option<String>,
    /// Keep the N newest by `sort`.
    pub keep_last: Option<usize>,
    /// Keep tags that parse as semver and match this range.
    pub keep_semver: Option<String>,
    /// Drop only tags created more than this many seconds before `now`.
    pub older_than: Option<u64>,
    /// The order of `keep_last`.
    pub sort: SortBy,
    /// Plan only: change nothing.
    pub dry_run: bool,
    /// "Now", in seconds since the epoch (`None`: the system clock).
    pub now: Option<i64>,
}

/// A tag and what the policies look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// The tag.
    pub name: String,
    /// Its image's creation time in seconds since the epoch, if known.
    pub created: Option<i64>,
}

/// One tag's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The tag.
    pub name: String,
    /// Whether it is dropped.
    pub drop: bool,
    /// Why.
    pub reason: String,
}

/// What prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Whether this was a dry run.
    #[serde(rename = "dryRun")]
    pub dry_run: bool,
    /// Every tag's decision, in index order.
    pub plan: Vec<Decision>,
    /// The names taken off.
    pub untagged: Vec<String>,
    /// gc's report (`None` on a dry run).
    pub gc: Option<GcReport>,
}

/// Parses `30d`, `12h`, `2w`, `90m` (also `s`) into seconds.
///
/// # Errors
/// [`PruneError::Duration`].
pub fn parse_duration(s: &str) -> Result<u64, PruneError> {
    let bad = || PruneError::Duration(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Parses an RFC 3339 time (`2024-01-02T03:04:05.123Z`, `+01:00`) into
/// seconds since the epoch: `mod`'s parser ([`crate::modify::time::parse`]),
/// without its `@UNIX` form (a config's `created` is RFC 3339).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    if s.starts_with('@') {
        return None;
    }
    crate::modify::time::parse(s)
}

/// A tag as a semantic version (a leading `v` allowed).
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Parses a range: `>=1.2 <2`, `^1.2`, `~1.2.3`, `1.x`, comparators separated
/// by commas or spaces.
///
/// # Errors
/// [`PruneError::Range`].
pub fn parse_range(s: &str) -> Result<semver::VersionReq, PruneError> {
    // The semver crate wants commas between comparators; accept spaces too,
    // keeping an operator attached to the version after it.
    let mut parts: Vec<String> = Vec::new();
    for tok in s.split([',', ' ']).filter(|t| !t.is_empty()) {
        match parts.last_mut() {
            Some(last) if last.chars().all(|c| "<>=~^".contains(c)) => last.push_str(tok),
            _ => parts.push(tok.to_string()),
        }
    }
    semver::VersionReq::parse(&parts.join(", "))
        .map_err(|e| PruneError::Range(s.to_string(), e.to_string()))
}

/// The policies, parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    matching: Option<regex::Regex>,
    keep_last: Option<usize>,
    keep_semver: Option<(String, semver::VersionReq)>,
    older_than: Option<u64>,
    sort: SortBy,
}

impl Policy {
    /// Parses the options' policies; refuses none at all.
    ///
    /// # Errors
    /// [`PruneError::NoPolicy`], [`PruneError::Regex`], [`PruneError::Range`].
    pub fn new(o: &PruneOptions) -> Result<Policy, PruneError> {
        if o.keep_last.is_none() && o.keep_semver.is_none() && o.older_than.is_none() {
            return Err(PruneError::NoPolicy);
        }
        let matching = o
            .matching
            .as_deref()
            .map(|m| regex::Regex::new(m).map_err(|e| PruneError::Regex(m.into(), e.to_string())))
            .transpose()?;
        let keep_semver = o
            .keep_semver
            .as_deref()
            .map(|r| parse_range(r).map(|req| (r.to_string(), req)))
            .transpose()?;
        Ok(Policy {
            matching,
            keep_last: o.keep_last,
            keep_semver,
            older_than: o.older_than,
            sort: o.sort,
        })
    }
}

/// A duration as the shortest of `2w`, `30d`, `12h`, `90m`, `45s`.
pub fn format_duration(secs: u64) -> String {
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs != 0 && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

fn newest_first(sort: SortBy, a: &TagInfo, b: &TagInfo) -> Ordering {
    let key = match sort {
        SortBy::Created => b.created.cmp(&a.created),
        SortBy::Semver => tag_version(&b.name).cmp(&tag_version(&a.name)),
        SortBy::Name => Ordering::Equal,
    };
    key.then_with(|| b.name.cmp(&a.name))
}

/// Decides each tag's fate (a pure function): a candidate (matched by the
/// regex) is dropped only when every given policy drops it.
pub fn plan_tags(tags: &[TagInfo], policy: &Policy, now: i64) -> Vec<Decision> {
    let candidate = |t: &TagInfo| policy.matching.as_ref().is_none_or(|r| r.is_match(&t.name));
    let sort_name = match policy.sort {
        SortBy::Created => "created",
        SortBy::Semver => "semver",
        SortBy::Name => "name",
    };
    let mut ranked: Vec<&TagInfo> = tags.iter().filter(|t| candidate(t)).collect();
    ranked.sort_by(|a, b| newest_first(policy.sort, a, b));
    let last: BTreeSet<&str> = policy
        .keep_last
        .map(|n| ranked.iter().take(n).map(|t| t.name.as_str()).collect())
        .unwrap_or_default();
    tags.iter()
        .map(|t| {
            let keep = |reason: String| Decision {
                name: t.name.clone(),
                drop: false,
                reason,
            };
            if !candidate(t) {
                return keep("not matched by --match".into());
            }
            let mut drops = Vec::new();
            if let Some(n) = policy.keep_last {
                if last.contains(t.name.as_str()) {
                    return keep(format!("in the last {n} by {sort_name}"));
                }
                drops.push(format!("not in the last {n} by {sort_name}"));
            }
            if let Some((text, req)) = &policy.keep_semver {
                if tag_version(&t.name).is_some_and(|v| req.matches(&v)) {
                    return keep(format!("semver {text}"));
                }
                drops.push(format!("not semver {text}"));
            }
            if let Some(secs) = policy.older_than {
                let cutoff = now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX));
                match t.created {
                    None => return keep("no created time".into()),
                    Some(c) if c >= cutoff => {
                        return keep(format!("newer than {}", format_duration(secs)))
                    }
                    Some(_) => drops.push(format!("older than {}", format_duration(secs))),
                }
            }
            Decision {
                name: t.name.clone(),
                drop: true,
                reason: drops.join(", "),
            }
        })
        .collect()
}

fn read_json(store: &dyn Store, digest: &str, size: i64) -> Option<serde_json::Value> {
    let d = Digest::parse(digest).ok()?;
    let bytes = store.read_verified(&d, size, MAX_DOCUMENT_SIZE).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The creation time of the image (manifest or index) a descriptor names:
/// an index's is the newest of its manifests'.
fn created_of(store: &dyn Store, digest: &str, size: i64, depth: u32) -> Option<i64> {
    let v = read_json(store, digest, size)?;
    if let Some(list) = v.get("manifests").and_then(|m| m.as_array()) {
        if depth > 4 {
            return None;
        }
        return list
            .iter()
            .filter_map(|m| {
                created_of(
                    store,
                    m.get("digest")?.as_str()?,
                    m.get("size")?.as_i64()?,
                    depth + 1,
                )
            })
            .max();
    }
    let c = v.get("config")?;
    let cfg = read_json(store, c.get("digest")?.as_str()?, c.get("size")?.as_i64()?)?;
    parse_rfc3339(cfg.get("created")?.as_str()?)
}

/// Plans the retention, then (unless `dry_run`) untags the dropped names
/// under the writer lock and runs gc.
///
/// # Errors
/// See [`PruneError`].
pub fn prune(layout: &Layout, options: &PruneOptions) -> Result<PruneReport, PruneError> {
    let policy = Policy::new(options)?;
    let now = options.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    let index = layout.read_checked_index()?;
    let store = layout.store();
    let mut tags: Vec<TagInfo> = Vec::new();
    for e in &index.entries {
        let Some(name) = e.descriptor.ref_name() else {
            continue;
        };
        if tags.iter().any(|t| t.name == name) {
            continue;
        }
        let created = created_of(store, &e.descriptor.digest, e.descriptor.size, 0);
        tags.push(TagInfo {
            name: name.to_string(),
            created,
        });
    }
    let plan = plan_tags(&tags, &policy, now);
    if options.dry_run {
        return Ok(PruneReport {
            dry_run: true,
            plan,
            untagged: Vec::new(),
            gc: None,
        });
    }
    let drop: BTreeSet<&str> = plan
        .iter()
        .filter(|d| d.drop)
        .map(|d| d.name.as_str())
        .collect();
    // gc's checks first (a dry run: no lock file, nothing changed), so a
    // graph gc would refuse is refused before any name is taken off.
    if let Err(e) = crate::gc::gc(
        layout,
        &GcOptions {
            dry_run: true,
            ..GcOptions::default()
        },
    ) {
        return Err(PruneError::Gc {
            untagged: Vec::new(),
            source: Box::new(e),
        });
    }
    let untagged = if drop.is_empty() {
        Vec::new()
    } else {
        layout.drop_tags(&drop)?
    };
    let gc = match crate::gc::gc(layout, &GcOptions::default()) {
        Ok(gc) => gc,
        Err(e) => {
            return Err(PruneError::Gc {
                untagged,
                source: Box::new(e),
            })
        }
    };
    Ok(PruneReport {
        dry_run: false,
        plan,
        untagged,
        gc: Some(gc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, created: Option<i64>) -> TagInfo {
        TagInfo {
            name: name.into(),
            created,
        }
    }

    fn policy(o: PruneOptions) -> Policy {
        Policy::new(&o).unwrap()
    }

    fn drops(tags: &[TagInfo], o: PruneOptions, now: i64) -> Vec<String> {
        plan_tags(tags, &policy(o), now)
            .into_iter()
            .filter(|d| d.drop)
            .map(|d| d.name)
            .collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        for bad in ["", "d", "10", "10x", "-1d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00.123456789+01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        for bad in [
            "",
            "2024-01-01",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let m = |r: &str, v: &str| parse_range(r).unwrap().matches(&tag_version(v).unwrap());
        assert!(m(">=1.2 <2", "1.2.0") && m(">=1.2 <2", "v1.9.9") && !m(">=1.2 <2", "2.0.0"));
        assert!(m(">=1.2, <2", "1.5.0") && !m(">=1.2,<2", "1.1.0"));
        assert!(m("^1.2", "1.3.0") && !m("^1.2", "2.0.0"));
        assert!(m("~1.2.3", "1.2.9") && !m("~1.2.3", "1.3.0"));
        assert!(m("1.x", "1.0.0") && !m("1.x", "2.0.0"));
        assert!(m(">= 1.2", "1.2.0"));
        assert!(parse_range("not a range").is_err());
        assert!(tag_version("latest").is_none());
    }

    #[test]
    fn no_policy_is_refused() {
        let o = PruneOptions {
            matching: Some(".".into()),
            ..Default::default()
        };
        assert!(matches!(Policy::new(&o), Err(PruneError::NoPolicy)));
    }

    #[test]
    fn keep_last_orders_and_ties() {
        let tags = [
            tag("b", Some(10)),
            tag("a", Some(10)),
            tag("none", None),
            tag("c", Some(5)),
        ];
        let o = |n, sort| PruneOptions {
            keep_last: Some(n),
            sort,
            ..Default::default()
        };
        // Ties broken by name (b is "newer" than a), no time is oldest.
        assert_eq!(drops(&tags, o(1, SortBy::Created), 0), ["a", "none", "c"]);
        assert_eq!(drops(&tags, o(3, SortBy::Created), 0), ["none"]);
        assert_eq!(drops(&tags, o(1, SortBy::Name), 0), ["b", "a", "c"]);
        let v = [tag("v1.10.0", None), tag("1.9.0", None), tag("junk", None)];
        assert_eq!(drops(&v, o(1, SortBy::Semver), 0), ["1.9.0", "junk"]);
        assert_eq!(drops(&v, o(2, SortBy::Semver), 0), ["junk"]);
    }

    #[test]
    fn older_than_and_agreement() {
        let tags = [tag("old", Some(0)), tag("new", Some(95)), tag("none", None)];
        let o = PruneOptions {
            older_than: Some(10),
            ..Default::default()
        };
        assert_eq!(drops(&tags, o.clone(), 100), ["old"]);
        // keep-last 1 keeps "new"; both must agree to drop "old".
        let both = PruneOptions {
            keep_last: Some(1),
            ..o.clone()
        };
        assert_eq!(drops(&tags, both, 100), ["old"]);
        let unmatched = PruneOptions {
            matching: Some("^n".into()),
            ..o
        };
        assert!(drops(&tags, unmatched, 100).is_empty());
        let plan = plan_tags(
            &tags,
            &policy(PruneOptions {
                older_than: Some(10),
                ..Default::default()
            }),
            100,
        );
        assert_eq!(plan[0].reason, "older than 10s");
        assert_eq!(plan[1].reason, "newer than 10s");
        assert_eq!(format_duration(250 * 3600), "250h");
        assert_eq!(format_duration(14 * 86_400), "2w");
    }
}
