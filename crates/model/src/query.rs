use serde::Serialize;

use crate::{Arch, Coordinates, NameScope, PackageName, Platform, VersionRequirement};

/// Which page of a list to show. `page` counts from 1; `per_page` is at most
/// [`PageRequest::MAX_PER_PAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub per_page: u32,
}

impl PageRequest {
    pub const MAX_PER_PAGE: u32 = 100;
    pub const DEFAULT_PER_PAGE: u32 = 50;

    /// Clamps to the allowed range: page ≥ 1, 1 ≤ per_page ≤ 100.
    pub fn new(page: Option<u32>, per_page: Option<u32>) -> Self {
        Self {
            page: page.unwrap_or(1).max(1),
            per_page: per_page
                .unwrap_or(Self::DEFAULT_PER_PAGE)
                .clamp(1, Self::MAX_PER_PAGE),
        }
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// Which packages a list shows, by their `is_active` flag. Yanked (inactive) packages are
/// hidden unless asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activity {
    #[default]
    ActiveOnly,
    InactiveOnly,
    All,
}

/// Filters for listing packages. Lists show active packages, by name, then newest
/// version (SemVer precedence) first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only one package name, and optionally only its versions matching a requirement.
    pub name: Option<NameFilter>,
    /// Only names containing this text (a search; matched as it is, case and all).
    pub name_contains: Option<String>,
    pub platform: Option<Platform>,
    pub arch: Option<Arch>,
    pub activity: Activity,
    /// Only names the caller may see (a token limited to name patterns).
    pub names: NameScope,
    pub page: PageRequest,
    /// Where the page starts: by its number (`page.page`), or by a package's place in the
    /// order, which costs the same at any depth.
    pub from: ListFrom,
}

/// Where a page of a package list starts. Paging by place reads only the page's rows
/// wherever it is in the list; paging by number skips every row before it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListFrom {
    /// Page `page.page`, counted from the start.
    #[default]
    Number,
    /// The packages just after this one in the list's order.
    After(Coordinates),
    /// The packages just before this one.
    Before(Coordinates),
    /// The last page.
    End,
}

/// One package name, and optionally a version requirement.
///
/// NOTE: a requirement cannot be matched in SQL, so the store reads the rows of the other
/// filters and matches them itself. It exists only beside a name, which keeps that to one
/// package's versions: a requirement over every package cannot be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameFilter {
    pub name: PackageName,
    /// Only versions matching this requirement (pre-releases included).
    pub version: Option<VersionRequirement>,
}

impl NameFilter {
    pub fn new(name: PackageName) -> Self {
        Self {
            name,
            version: None,
        }
    }
}

/// Which package `latest` looks for: the active one of highest SemVer precedence for one
/// name, platform and architecture, optionally among the versions matching a requirement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LatestQuery {
    pub name: PackageName,
    pub platform: Platform,
    pub arch: Arch,
    pub requirement: Option<VersionRequirement>,
    /// Whether a pre-release may be chosen.
    pub include_prerelease: bool,
}

/// One page of results and the total across all pages.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_are_clamped() {
        assert_eq!(
            PageRequest::new(Some(0), Some(0)),
            PageRequest {
                page: 1,
                per_page: 1
            }
        );
        assert_eq!(PageRequest::new(None, Some(1000)).per_page, 100);
        assert_eq!(PageRequest::new(Some(3), Some(20)).offset(), 40);
    }
}
