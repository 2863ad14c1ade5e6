//! The one way a closed set of words is written: an enum whose variants each have one
//! spelling, used by serde, `FromStr`, `Display` and [`as_str`](#method.as_str) alike, and
//! whose parse error names the field and lists every accepted word.

/// `closed_set! { /// docs  Name, "field", { /// docs  Variant => "text", … } }`
///
/// Generates the enum (`Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize`),
/// `ALL` in declaration order, `as_str`, `FromStr` (a [`ValidationError`](crate::ValidationError)
/// on `field`) and `Display`. Extra derives (`Default`, `PartialOrd`) go in the leading
/// attributes.
macro_rules! closed_set {
    (
        $(#[$meta:meta])*
        $ty:ident, $field:literal, {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $ty { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The one spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    _ => Err($crate::ValidationError::new(
                        $field,
                        format!("must be one of: {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }

        impl $crate::ClosedSet for $ty {
            fn all() -> &'static [Self] {
                $ty::ALL
            }

            fn name(self) -> &'static str {
                $ty::as_str(self)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use closed_set;

/// What every closed set of words has, for code generic over them (a command line's value
/// parser, say).
pub trait ClosedSet:
    Copy + std::str::FromStr<Err = crate::ValidationError> + std::fmt::Display + 'static
{
    /// Every value, in declaration order.
    fn all() -> &'static [Self];
    /// The one spelling of this value.
    fn name(self) -> &'static str;
}

#[cfg(test)]
mod tests {
    closed_set!(
        /// A test set.
        Colour, "colour", {
            /// The first.
            Red => "red",
            DarkBlue => "dark_blue",
        }
    );

    #[test]
    fn one_spelling_everywhere_and_a_named_error() {
        for c in Colour::ALL {
            assert_eq!(c.as_str().parse::<Colour>().unwrap(), *c);
            assert_eq!(c.to_string(), c.as_str());
            assert_eq!(
                serde_json::to_string(c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        let err = "blue".parse::<Colour>().unwrap_err();
        assert_eq!(err.field, "colour");
        assert_eq!(err.message, "must be one of: red, dark_blue");
    }
}
