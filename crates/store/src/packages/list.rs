//! The package list: filters, the order (name, newest version first, platform, arch),
//! pages by number or by place (keyset), and totals counted once per package revision.

use agentpkg_model::{Activity, Coordinates, ListFrom, ListQuery, NameScope, Package, Page};
use diesel::prelude::*;
use diesel::sql_types::Bool;

use super::{Boxed, PackageRow};
use crate::connection::MultiBackend;
use crate::schema::packages;
use crate::{DbConnection, StoreError};

fn filtered(q: &ListQuery) -> Boxed<'_> {
    let mut query = packages::table.into_boxed();
    query = match q.activity {
        Activity::ActiveOnly => query.filter(packages::is_active.eq(true)),
        Activity::InactiveOnly => query.filter(packages::is_active.eq(false)),
        Activity::All => query,
    };
    if let Some(filter) = &q.name {
        query = query.filter(packages::name.eq(filter.name.as_str()));
    }
    if let Some(part) = &q.name_contains {
        // A substring of the name: `%`, `_` and `\` in it are themselves.
        let like = format!(
            "%{}%",
            part.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        query = query.filter(packages::name.like(like).escape('\\'));
    }
    if let Some(platform) = q.platform {
        query = query.filter(packages::platform.eq(platform.as_str()));
    }
    if let Some(arch) = q.arch {
        query = query.filter(packages::arch.eq(arch.as_str()));
    }
    if let NameScope::Matching(patterns) = &q.names {
        // Any pattern, as LIKE with `*` as `%`; `_` and `%` in a pattern are themselves.
        let mut any: Option<
            Box<dyn BoxableExpression<packages::table, MultiBackend, SqlType = Bool>>,
        > = None;
        for pattern in patterns {
            let like = pattern
                .as_str()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('*', "%");
            let this = packages::name.like(like).escape('\\');
            any = Some(match any {
                None => Box::new(this),
                Some(before) => Box::new(before.or(this)),
            });
        }
        // No pattern at all matches nothing.
        query = match any {
            Some(any) => query.filter(any),
            None => query.filter(packages::id.lt(0)),
        };
    }
    query
}

type ListOrder = (
    diesel::helper_types::Asc<packages::name>,
    diesel::helper_types::Desc<packages::version_sort>,
    diesel::helper_types::Asc<packages::platform>,
    diesel::helper_types::Asc<packages::arch>,
);

/// By name, then newest version first.
fn list_order() -> ListOrder {
    (
        packages::name.asc(),
        packages::version_sort.desc(),
        packages::platform.asc(),
        packages::arch.asc(),
    )
}

/// Totals of package lists by their filters, each with the package revision it was
/// counted at: a publish, yank or delete moves the revision, so a total is counted again
/// after one (and not after a rollout's step or an assignment's change, which move only
/// the fleet's). A revision moves before its transaction commits, so a total counted in
/// between can miss that change: entries also expire after [`TOTAL_TTL`], which bounds
/// that lag.
pub(crate) type Totals = moka::sync::Cache<String, (i64, u64)>;

/// How long a counted total may serve, at most.
pub(crate) const TOTAL_TTL: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn totals() -> Totals {
    moka::sync::Cache::builder()
        .max_capacity(1024)
        .time_to_live(TOTAL_TTL)
        .build()
}

/// The number of packages `q` filters, counted or as counted at this revision. A list of
/// one name is counted each time (its rows are few, and its total is not kept).
fn total(conn: &mut DbConnection, q: &ListQuery, totals: &Totals) -> Result<u64, StoreError> {
    let count = |conn: &mut DbConnection| -> Result<u64, StoreError> {
        let counted: i64 = filtered(q).count().get_result(conn)?;
        Ok(u64::try_from(counted).unwrap_or(0))
    };
    if q.name.is_some() {
        return count(conn);
    }
    let key = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        q.name_contains, q.platform, q.arch, q.activity, q.names
    );
    let revision = super::revision(conn)?;
    if let Some((at, total)) = totals.get(&key)
        && at == revision
    {
        return Ok(total);
    }
    let counted = count(conn)?;
    totals.insert(key, (revision, counted));
    Ok(counted)
}

/// A package's place in the list's order: name, newest version first, platform, arch.
type Place = (String, std::cmp::Reverse<String>, String, String);

fn place_of(c: &Coordinates) -> Place {
    (
        c.name.as_str().to_owned(),
        std::cmp::Reverse(c.version.sort_key()),
        c.platform.as_str().to_owned(),
        c.arch.as_str().to_owned(),
    )
}

type Condition = Box<dyn BoxableExpression<packages::table, MultiBackend, SqlType = Bool>>;

/// The rows after `c` in the list's order (or before it, `after` false).
fn beyond(c: &Coordinates, after: bool) -> Condition {
    let name = c.name.as_str().to_owned();
    let version = c.version.sort_key();
    let platform = c.platform.as_str().to_owned();
    let arch = c.arch.as_str().to_owned();
    if after {
        // The redundant `name >= …` lets the index start at the place.
        Box::new(
            packages::name.ge(name.clone()).and(
                packages::name
                    .gt(name.clone())
                    .or(packages::name.eq(name).and(
                        packages::version_sort
                            .lt(version.clone())
                            .or(packages::version_sort.eq(version).and(
                                packages::platform
                                    .gt(platform.clone())
                                    .or(packages::platform
                                        .eq(platform)
                                        .and(packages::arch.gt(arch))),
                            )),
                    )),
            ),
        )
    } else {
        Box::new(
            packages::name.le(name.clone()).and(
                packages::name
                    .lt(name.clone())
                    .or(packages::name.eq(name).and(
                        packages::version_sort
                            .gt(version.clone())
                            .or(packages::version_sort.eq(version).and(
                                packages::platform
                                    .lt(platform.clone())
                                    .or(packages::platform
                                        .eq(platform)
                                        .and(packages::arch.lt(arch))),
                            )),
                    )),
            ),
        )
    }
}

/// The list's order backwards, for a page before a place or the last page.
fn reverse_order() -> (
    diesel::helper_types::Desc<packages::name>,
    diesel::helper_types::Asc<packages::version_sort>,
    diesel::helper_types::Desc<packages::platform>,
    diesel::helper_types::Desc<packages::arch>,
) {
    (
        packages::name.desc(),
        packages::version_sort.asc(),
        packages::platform.desc(),
        packages::arch.desc(),
    )
}

/// One page of `items` (already in the list's order) as `q` asks.
fn page_of(items: Vec<Package>, q: &ListQuery) -> Vec<Package> {
    let per_page = q.page.per_page as usize;
    match &q.from {
        ListFrom::Number => {
            let offset = usize::try_from(q.page.offset()).unwrap_or(usize::MAX);
            items.into_iter().skip(offset).take(per_page).collect()
        }
        ListFrom::After(c) => {
            let at = place_of(c);
            items
                .into_iter()
                .filter(|p| place_of(&p.coordinates()) > at)
                .take(per_page)
                .collect()
        }
        ListFrom::Before(c) => {
            let at = place_of(c);
            let before: Vec<_> = items
                .into_iter()
                .filter(|p| place_of(&p.coordinates()) < at)
                .collect();
            let skip = before.len().saturating_sub(per_page);
            before.into_iter().skip(skip).collect()
        }
        ListFrom::End => {
            let skip = items.len().saturating_sub(per_page);
            items.into_iter().skip(skip).collect()
        }
    }
}

pub(crate) fn list(
    conn: &mut DbConnection,
    q: &ListQuery,
    totals: &Totals,
) -> Result<Page<Package>, StoreError> {
    if let Some(requirement) = q.name.as_ref().and_then(|f| f.version.as_ref()) {
        // NOTE: a requirement cannot be expressed on version_sort in SQL, so the rows of the
        // other filters are read and matched here. A requirement only comes with a name
        // (`NameFilter`), which keeps this to one package's versions.
        let mut matching = Vec::new();
        for row in filtered(q)
            .order(list_order())
            .select(PackageRow::as_select())
            .load(conn)?
        {
            let package = Package::try_from(row)?;
            if requirement.matches(&package.version, true) {
                matching.push(package);
            }
        }
        let total = matching.len() as u64;
        return Ok(Page {
            items: page_of(matching, q),
            total,
            page: q.page.page,
            per_page: q.page.per_page,
        });
    }
    let total = total(conn, q, totals)?;
    let limit = i64::from(q.page.per_page);
    let rows: Vec<PackageRow> = match &q.from {
        ListFrom::Number => filtered(q)
            .order(list_order())
            .limit(limit)
            .offset(i64::try_from(q.page.offset()).unwrap_or(i64::MAX))
            .select(PackageRow::as_select())
            .load(conn)?,
        ListFrom::After(c) => filtered(q)
            .filter(beyond(c, true))
            .order(list_order())
            .limit(limit)
            .select(PackageRow::as_select())
            .load(conn)?,
        ListFrom::Before(c) => {
            let mut rows = filtered(q)
                .filter(beyond(c, false))
                .order(reverse_order())
                .limit(limit)
                .select(PackageRow::as_select())
                .load(conn)?;
            rows.reverse();
            rows
        }
        ListFrom::End => {
            let mut rows = filtered(q)
                .order(reverse_order())
                .limit(limit)
                .select(PackageRow::as_select())
                .load(conn)?;
            rows.reverse();
            rows
        }
    };
    Ok(Page {
        items: rows
            .into_iter()
            .map(Package::try_from)
            .collect::<Result<_, _>>()?,
        total,
        page: q.page.page,
        per_page: q.page.per_page,
    })
}
