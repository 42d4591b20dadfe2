//! sync's config: the YAML (or JSON) file read with positions, its tag
//! filters and name templates, checked whole before anything is opened.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::platform::PlatformSpec;

use super::SyncError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Option<Spanned<u32>>,
    #[serde(default)]
    defaults: Option<Spanned<RawSettings>>,
    sync: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSettings {
    tags: Option<Spanned<RawTags>>,
    platforms: Option<Vec<Spanned<String>>>,
    referrers: Option<bool>,
    digest_tags: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEntry {
    source: Spanned<String>,
    target: Spanned<String>,
    tags: Option<Spanned<RawTags>>,
    platforms: Option<Vec<Spanned<String>>>,
    referrers: Option<bool>,
    digest_tags: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawTags {
    allow: Option<Vec<Spanned<String>>>,
    deny: Option<Vec<Spanned<String>>>,
    semver: Option<Spanned<String>>,
}

/// A tag regex as written and compiled (anchored: it must match the whole tag).
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As written in the config.
    pub text: String,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `text` to match whole tags only.
    ///
    /// # Errors
    /// The regex error's text.
    pub fn new(text: &str) -> Result<Pattern, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{text})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| match e {
                // The syntax error's last line says what is wrong (the lines
                // before it draw the anchored pattern).
                regex::Error::Syntax(m) => m
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("syntax error")
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string(),
                other => other.to_string(),
            })?;
        Ok(Pattern {
            text: text.to_string(),
            regex,
        })
    }

    /// Whether it matches the whole of `tag`.
    pub fn matches(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }
}

/// The tag filters of an entry.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    /// If not empty, a tag must match one of these.
    pub allow: Vec<Pattern>,
    /// A tag matching any of these is dropped.
    pub deny: Vec<Pattern>,
    /// A tag must parse as a version ([`crate::prune::tag_version`]) in this range.
    pub semver: Option<(String, semver::VersionReq)>,
}

impl TagFilter {
    /// `None` when `tag` passes, else why it is filtered out.
    pub fn reject(&self, tag: &str) -> Option<String> {
        if !self.allow.is_empty() && !self.allow.iter().any(|p| p.matches(tag)) {
            let list: Vec<String> = self.allow.iter().map(|p| format!("{:?}", p.text)).collect();
            return Some(format!("not allowed by {}", list.join(", ")));
        }
        if let Some(p) = self.deny.iter().find(|p| p.matches(tag)) {
            return Some(format!("deny {:?}", p.text));
        }
        if let Some((text, req)) = &self.semver {
            match tag_version(tag) {
                None => return Some(format!("semver {text:?}: not a version")),
                Some(v) if !req.matches(&v) => {
                    return Some(format!("semver {text:?}: out of range"))
                }
                Some(_) => {}
            }
        }
        None
    }
}

/// A tag as a version: [`crate::prune::tag_version`] (a leading `v`
/// allowed), also for a partial `1` or `v1.4` (padded to `1.4.0`; a
/// pre-release or build part after it is kept: `1.4-rc1` → `1.4.0-rc1`).
pub fn tag_version(tag: &str) -> Option<semver::Version> {
    if let Some(v) = crate::prune::tag_version(tag) {
        return Some(v);
    }
    let bare = tag.strip_prefix('v').unwrap_or(tag);
    let end = bare.find(['-', '+']).unwrap_or(bare.len());
    let (core, rest) = bare.split_at(end);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let padded = match parts.len() {
        1 => format!("{core}.0.0{rest}"),
        _ => format!("{core}.0{rest}"),
    };
    crate::prune::tag_version(&padded)
}

/// One piece of a name template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Name,
    Tag,
    Repo,
    Digest,
    Hex,
}

/// A target name template: `{{repo}}:{{tag}}`, `mirror/{{name}}`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a template; `{{ var }}` with `name`, `tag`, `repo`, `digest`, `hex`.
    ///
    /// # Errors
    /// An unknown variable or an unclosed `{{`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("template {text:?}: '{{{{' without '}}}}'"))?;
            let var = match after[..close].trim() {
                "name" => Var::Name,
                "tag" => Var::Tag,
                "repo" => Var::Repo,
                "digest" => Var::Digest,
                "hex" => Var::Hex,
                other => {
                    return Err(format!(
                        "template {text:?}: unknown variable {other:?} (known: name, tag, repo, digest, hex)"
                    ))
                }
            };
            pieces.push(Piece::Var(var));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err("the name template is empty".into());
        }
        Ok(Template {
            text: text.to_string(),
            pieces,
        })
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The target name of an image.
    pub fn render(&self, v: &Vars<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(Var::Name) => out.push_str(v.name),
                Piece::Var(Var::Tag) => out.push_str(v.tag),
                Piece::Var(Var::Repo) => out.push_str(v.repo),
                Piece::Var(Var::Digest) => out.push_str(v.digest),
                Piece::Var(Var::Hex) => {
                    out.push_str(v.digest.split_once(':').map_or(v.digest, |(_, h)| h))
                }
            }
        }
        out
    }
}

/// The values of a template's variables for one image.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The source's ref name as stored.
    pub name: &'a str,
    /// Its tag part.
    pub tag: &'a str,
    /// Its repository part, or the source's base name.
    pub repo: &'a str,
    /// The source descriptor's digest.
    pub digest: &'a str,
}

/// Splits a stored name into (repository, tag): the tag is what follows the
/// last `:` after the last `/`; a name without one is all tag (repository
/// `None`).
pub fn split_name(name: &str) -> (Option<&str>, &str) {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (Some(&name[..slash + i]), &name[slash + i + 1..]),
        None => (None, name),
    }
}

/// A location's base name for `{{repo}}`: the directory's name, or the
/// file's without `.tar`, `.tar.gz`, `.tgz`, `.tar.zst`, `.tzst`, `.tar.zstd`.
pub fn base_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in [".tar.gz", ".tar.zst", ".tar.zstd", ".tgz", ".tzst", ".tar"] {
        if let Some(stem) = name.strip_suffix(ext) {
            if !stem.is_empty() {
                return stem.to_string();
            }
        }
    }
    name
}

/// One `sync` entry, parsed.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based position in the `sync` list.
    pub number: usize,
    /// The source as written.
    pub source: String,
    /// The source with relative paths resolved against the config's
    /// directory.
    pub source_resolved: String,
    /// Whether the source is a glob pattern (of paths, no REF).
    pub glob: bool,
    /// The target as written.
    pub target: String,
    /// The target layout directory (resolved).
    pub target_layout: PathBuf,
    /// The target name template.
    pub template: Template,
    /// Tag filters.
    pub tags: TagFilter,
    /// Platforms to keep (empty: all).
    pub platforms: Vec<PlatformSpec>,
    /// Copy referrers of the copied images.
    pub referrers: bool,
    /// `sha256-<hex>[.suffix]` tags follow their image.
    pub digest_tags: bool,
}

/// A parsed config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory relative paths start from (the config file's).
    pub base: PathBuf,
    /// The entries in order.
    pub entries: Vec<Entry>,
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, at: Option<&serde_saphyr::Location>, message: String) -> SyncError {
        SyncError::Config {
            file: self.file.to_string(),
            line: at.map_or(0, serde_saphyr::Location::line),
            column: at.map_or(0, serde_saphyr::Location::column),
            message,
        }
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Joins a relative path to `base`; an absolute one stays.
fn resolve_path(base: &Path, p: &str) -> String {
    if Path::new(p).is_absolute() || base.as_os_str().is_empty() {
        p.to_string()
    } else {
        base.join(p).to_string_lossy().into_owned()
    }
}

pub(super) fn split_transport(s: &str) -> (Option<&'static str>, &str) {
    for t in ["oci", "oci-archive", "docker-archive"] {
        if let Some(rest) = s.strip_prefix(t).and_then(|r| r.strip_prefix(':')) {
            return (Some(t), rest);
        }
    }
    (None, s)
}

/// Splits a target into its layout directory and name template: an optional
/// `oci:` prefix goes; if the rest has no `:` or is an existing path, it is
/// all layout (template `{{name}}`); otherwise the layout ends at the first
/// `:` and the template is everything after it.
pub(super) fn split_target(target: &str, base: &Path) -> Result<(PathBuf, String), String> {
    let rest = match split_transport(target) {
        (Some("oci"), rest) => rest,
        (Some(t), _) => {
            return Err(format!(
                "target {target:?}: sync writes layouts, not {t} files"
            ))
        }
        (None, rest) => rest,
    };
    let whole = PathBuf::from(resolve_path(base, rest));
    let (dir, template) = match rest.find(':') {
        None => (rest, "{{name}}"),
        Some(_) if whole.symlink_metadata().is_ok() => (rest, "{{name}}"),
        Some(i) => (&rest[..i], &rest[i + 1..]),
    };
    if dir.is_empty() {
        return Err(format!("target {target:?} has no layout path"));
    }
    if template.is_empty() {
        return Err(format!(
            "target {target:?} ends with ':' but has no name template after it"
        ));
    }
    Ok((PathBuf::from(resolve_path(base, dir)), template.to_string()))
}

fn compile_tags(ctx: &Ctx<'_>, what: &str, raw: &Spanned<RawTags>) -> Result<TagFilter, SyncError> {
    let list = |field: &str, v: &Option<Vec<Spanned<String>>>| -> Result<Vec<Pattern>, SyncError> {
        v.iter()
            .flatten()
            .map(|s| {
                Pattern::new(&s.value).map_err(|e| {
                    ctx.err(
                        Some(&s.referenced),
                        format!("{what}: tags.{field}: bad regex {:?}: {e}", s.value),
                    )
                })
            })
            .collect()
    };
    let semver = match &raw.value.semver {
        None => None,
        Some(s) => Some((
            s.value.clone(),
            crate::prune::parse_range(&s.value).map_err(|e| {
                let detail = match e {
                    crate::prune::PruneError::Range(_, d) => d,
                    other => other.to_string(),
                };
                ctx.err(
                    Some(&s.referenced),
                    format!("{what}: tags.semver: bad range {:?}: {detail}", s.value),
                )
            })?,
        )),
    };
    Ok(TagFilter {
        allow: list("allow", &raw.value.allow)?,
        deny: list("deny", &raw.value.deny)?,
        semver,
    })
}

fn compile_platforms(
    ctx: &Ctx<'_>,
    what: &str,
    raw: &[Spanned<String>],
) -> Result<Vec<PlatformSpec>, SyncError> {
    raw.iter()
        .map(|s| {
            s.value.parse::<PlatformSpec>().map_err(|e| {
                ctx.err(
                    Some(&s.referenced),
                    format!("{what}: platforms: {:?}: {e}", s.value),
                )
            })
        })
        .collect()
}

/// The message of a serde-saphyr error without its " at line L, column C" tail.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    if let Some(loc) = e.location() {
        let tail = format!(" at line {}, column {}", loc.line(), loc.column());
        if let Some(stripped) = text.strip_suffix(&tail) {
            return stripped.to_string();
        }
    }
    text
}

impl Config {
    /// Reads and parses a config file; relative paths in it are relative to
    /// its directory.
    ///
    /// # Errors
    /// [`SyncError::Read`], [`SyncError::Config`].
    pub fn load(path: &Path) -> Result<Config, SyncError> {
        let meta = std::fs::metadata(path).map_err(|source| SyncError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // A config is small; a huge file is a mistake (or hostile).
        if meta.len() > 4 << 20 {
            return Err(SyncError::Config {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!(
                    "{} bytes is too big for a config (at most 4 MiB)",
                    meta.len()
                ),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| SyncError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| SyncError::Config {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// Parses a config's text; `file` names it in errors, `base` is the
    /// directory relative paths start from.
    ///
    /// # Errors
    /// [`SyncError::Config`].
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, SyncError> {
        let ctx = Ctx { file };
        // YAML 1.2 booleans only: `yes`, `on` (or "yes" in a JSON config)
        // are not `true`.
        let mut yaml = serde_saphyr::Options::default();
        yaml.strict_booleans = true;
        let raw: RawConfig = serde_saphyr::from_str_with_options(text, yaml).map_err(|e| {
            let loc = e.location();
            ctx.err(loc.as_ref(), yaml_message(&e))
        })?;
        if let Some(v) = &raw.version {
            if v.value != 1 {
                return Err(ctx.err(
                    Some(&v.referenced),
                    format!("version {}: only version 1 is known", v.value),
                ));
            }
        }
        let defaults = raw.defaults.as_ref().map(|d| &d.value);
        let default_tags = match defaults.and_then(|d| d.tags.as_ref()) {
            Some(t) => compile_tags(&ctx, "defaults", t)?,
            None => TagFilter::default(),
        };
        let default_platforms = match defaults.and_then(|d| d.platforms.as_ref()) {
            Some(p) => compile_platforms(&ctx, "defaults", p)?,
            None => Vec::new(),
        };
        let mut entries = Vec::new();
        for (i, e) in raw.sync.iter().enumerate() {
            let number = i + 1;
            let what = format!("entry {number}");
            let r = &e.value;
            let source = r.source.value.trim();
            if source.is_empty() {
                return Err(ctx.err(
                    Some(&r.source.referenced),
                    format!("{what}: source is empty"),
                ));
            }
            let (transport, path) = split_transport(source);
            let glob = is_glob(path);
            let source_resolved = {
                let p = resolve_path(base, path);
                match transport {
                    Some(t) => format!("{t}:{p}"),
                    None => p,
                }
            };
            if glob {
                glob::Pattern::new(&resolve_path(base, path)).map_err(|g| {
                    ctx.err(
                        Some(&r.source.referenced),
                        format!("{what}: source: bad glob {source:?}: {g}"),
                    )
                })?;
            }
            let (target_layout, template) = split_target(r.target.value.trim(), base)
                .map_err(|m| ctx.err(Some(&r.target.referenced), format!("{what}: {m}")))?;
            let template = Template::parse(&template)
                .map_err(|m| ctx.err(Some(&r.target.referenced), format!("{what}: target: {m}")))?;
            let tags = match &r.tags {
                Some(t) => compile_tags(&ctx, &what, t)?,
                None => default_tags.clone(),
            };
            let platforms = match &r.platforms {
                Some(p) => compile_platforms(&ctx, &what, p)?,
                None => default_platforms.clone(),
            };
            entries.push(Entry {
                number,
                source: source.to_string(),
                source_resolved,
                glob,
                target: r.target.value.trim().to_string(),
                target_layout,
                template,
                tags,
                platforms,
                referrers: r
                    .referrers
                    .or(defaults.and_then(|d| d.referrers))
                    .unwrap_or(true),
                digest_tags: r
                    .digest_tags
                    .or(defaults.and_then(|d| d.digest_tags))
                    .unwrap_or(false),
            });
        }
        Ok(Config {
            base: base.to_path_buf(),
            entries,
        })
    }
}
