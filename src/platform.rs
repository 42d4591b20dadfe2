//! Platform selection, normalised as containerd does: `linux/arm64` matches
//! `arm64/v8` and `arm64` with no variant; `linux/arm` means `arm/v7`;
//! `x86_64`/`aarch64` are aliases of `amd64`/`arm64`.

use std::fmt;
use std::str::FromStr;

use crate::spec::Platform;

/// A normalised `os/arch[/variant]` to match index entries and configs against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlatformSpec {
    /// Operating system, lowercase.
    pub os: String,
    /// Architecture, normalised (`amd64`, `arm64`, `arm`, `386`, …).
    pub architecture: String,
    /// Variant, normalised (`v7` for arm, empty for arm64/v8 and amd64/v1).
    pub variant: String,
}

/// Why a platform string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a platform (expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8)")]
pub struct PlatformError(pub String);

fn normalize(os: &str, arch: &str, variant: &str) -> PlatformSpec {
    let os = match os.to_ascii_lowercase().as_str() {
        "macos" => "darwin".to_string(),
        o => o.to_string(),
    };
    let arch_l = arch.to_ascii_lowercase();
    let var_l = variant.to_ascii_lowercase();
    let (architecture, variant) = match arch_l.as_str() {
        "i386" => ("386".to_string(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if var_l == "v1" { String::new() } else { var_l };
            ("amd64".to_string(), v)
        }
        "aarch64" | "arm64" => {
            let v = match var_l.as_str() {
                "8" | "v8" => String::new(),
                _ => var_l,
            };
            ("arm64".to_string(), v)
        }
        "armhf" => ("arm".to_string(), "v7".to_string()),
        "armel" => ("arm".to_string(), "v6".to_string()),
        "arm" => {
            let v = match var_l.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{var_l}"),
                _ => var_l,
            };
            ("arm".to_string(), v)
        }
        _ => (arch_l, var_l),
    };
    PlatformSpec {
        os,
        architecture,
        variant,
    }
}

impl PlatformSpec {
    /// The platform of the machine ocikit runs on (`linux/<arch>` on Linux).
    pub(crate) fn host() -> PlatformSpec {
        normalize(std::env::consts::OS, std::env::consts::ARCH, "")
    }

    /// Normalises a platform from a document.
    pub(crate) fn of(p: &Platform) -> PlatformSpec {
        normalize(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))
    }

    /// Whether `p` (from an index entry or config) is this platform.
    pub(crate) fn matches(&self, p: &Platform) -> bool {
        &PlatformSpec::of(p) == self
    }
}

impl FromStr for PlatformSpec {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(normalize(os, arch, "")),
            [os, arch, var] if ok(os) && ok(arch) && ok(var) => Ok(normalize(os, arch, var)),
            _ => Err(PlatformError(s.to_string())),
        }
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, var: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: var.map(Into::into),
            ..Platform::default()
        }
    }

    #[test]
    fn containerd_normalisation() {
        let arm64: PlatformSpec = "linux/arm64".parse().unwrap();
        assert!(arm64.matches(&p("linux", "arm64", Some("v8"))));
        assert!(arm64.matches(&p("linux", "arm64", None)));
        assert!(arm64.matches(&p("linux", "aarch64", None)));
        assert!(!arm64.matches(&p("linux", "amd64", None)));
        let arm: PlatformSpec = "linux/arm".parse().unwrap();
        assert!(arm.matches(&p("linux", "arm", Some("v7"))));
        assert!(arm.matches(&p("linux", "arm", None)));
        assert!(!arm.matches(&p("linux", "arm", Some("v6"))));
        assert_eq!(arm.to_string(), "linux/arm/v7");
        let amd: PlatformSpec = "linux/x86_64".parse().unwrap();
        assert_eq!(amd.to_string(), "linux/amd64");
        assert!(amd.matches(&p("linux", "amd64", Some("v1"))));
        assert!(!amd.matches(&p("windows", "amd64", None)));
        assert!("linux".parse::<PlatformSpec>().is_err());
        assert!("linux//v7".parse::<PlatformSpec>().is_err());
        assert!("a/b/c/d".parse::<PlatformSpec>().is_err());
    }
}
