//! Properties of validation and version ordering, over generated input.

use agentpkg_model::{Checksum, Description, FileName, PackageName, Version, VersionRequirement};
use proptest::prelude::*;

/// A pre-release identifier: numeric (no leading zero) or alphanumeric with hyphens.
fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|n| n.to_string()),
        "[0-9A-Za-z-]{1,8}".prop_filter("alphanumeric", |s| !s.bytes().all(|b| b.is_ascii_digit())),
    ]
}

fn version() -> impl Strategy<Value = String> {
    (
        0u64..30,
        0u64..30,
        0u64..30,
        proptest::collection::vec(identifier(), 0..4),
        proptest::option::of("[0-9A-Za-z]{1,6}"),
    )
        .prop_map(|(major, minor, patch, pre, build)| {
            let mut v = format!("{major}.{minor}.{patch}");
            if !pre.is_empty() {
                v.push('-');
                v.push_str(&pre.join("."));
            }
            if let Some(b) = build {
                v.push('+');
                v.push_str(&b);
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The database orders by `sort_key`; that order must be SemVer precedence exactly.
    #[test]
    fn sort_key_order_is_semver_precedence(a in version(), b in version()) {
        let (va, vb) = (Version::parse(&a).unwrap(), Version::parse(&b).unwrap());
        prop_assert_eq!(va.sort_key().cmp(&vb.sort_key()), va.precedence(&vb), "{} vs {}", a, b);
    }

    /// Arbitrary input never panics a parser, and what a parser accepts is what it says.
    #[test]
    fn parsers_never_panic(s in any::<String>()) {
        if let Ok(name) = PackageName::parse(&s) {
            prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
        }
        if let Ok(file) = FileName::parse(&s) {
            prop_assert!(!file.as_str().contains('/') && !file.as_str().contains("..") && !file.as_str().contains('\0'));
        }
        if let Ok(d) = Description::parse(&s) {
            prop_assert!(!d.as_str().contains('\0'));
        }
        let _ = Version::parse(&s);
        let _ = VersionRequirement::parse(&s);
        if let Ok(c) = Checksum::parse(&s) {
            prop_assert_eq!(c.as_str().len(), 64);
        }
    }

    /// No file name that passes validation can climb out of a directory.
    #[test]
    fn accepted_file_names_stay_in_their_directory(s in "[./\\\\a-z%0-9]{1,12}") {
        if let Ok(file) = FileName::parse(&s) {
            let path = std::path::Path::new("/base").join(file.as_str());
            prop_assert!(path.starts_with("/base"));
            prop_assert_eq!(path.parent(), Some(std::path::Path::new("/base")));
        }
    }
}

/// The reference glob: dynamic programming over (pattern prefix, text prefix), plainly
/// right and plainly polynomial.
fn reference_glob(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            // A star matches any run: true from the first prefix the row matched.
            let mut seen = false;
            for (j, cell) in next.iter_mut().enumerate() {
                seen |= row[j];
                *cell = seen;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == p;
            }
        }
        row = next;
    }
    row[text.len()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    /// Name patterns match exactly as the reference does, on a small alphabet where stars
    /// and near-misses are frequent.
    #[test]
    fn name_patterns_match_as_the_reference_glob(
        pattern in "[ab*]{0,12}",
        text in "[ab]{0,16}",
    ) {
        prop_assert_eq!(
            agentpkg_model::glob(pattern.as_bytes(), text.as_bytes()),
            reference_glob(pattern.as_bytes(), text.as_bytes()),
            "pattern {:?} text {:?}", pattern, text
        );
    }
}
