//! OpenAPI schemas of the validated string types, so that the API's description states the
//! same rules as their `parse` (feature `openapi`).

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::{
    Arch, AuditAction, AuditOutcome, Checksum, Description, ErrorCode, FileName, InstallStatus,
    PackageName, Platform, Role, SignatureFormat, TokenScope, Version, VersionRequirement,
};

/// SemVer 2.0 (semver.org's expression, with ASCII digits and numbers bounded to fit 64
/// bits).
const SEMVER: &str = r"^(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})(-(0|[1-9][0-9]{0,18}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]{0,18}|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$";

struct Text {
    description: &'static str,
    pattern: Option<&'static str>,
    min_length: Option<usize>,
    max_length: usize,
    example: &'static str,
}

impl Text {
    fn schema(self) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(self.description))
            .pattern(self.pattern)
            .min_length(self.min_length)
            .max_length(Some(self.max_length))
            .examples([self.example])
            .into()
    }
}

macro_rules! text_schema {
    ($ty:ty, $name:literal, $text:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $text.schema()
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

text_schema!(
    PackageName,
    "PackageName",
    Text {
        description: "1 to 128 characters of lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
        pattern: Some("^[a-z0-9][a-z0-9._-]*$"),
        min_length: Some(1),
        max_length: PackageName::MAX_LEN,
        example: "opamp-agent",
    }
);
text_schema!(
    Version,
    "Version",
    Text {
        description: "A SemVer 2.0 version",
        pattern: Some(SEMVER),
        min_length: Some(5),
        max_length: Version::MAX_LEN,
        example: "1.4.2",
    }
);
text_schema!(
    VersionRequirement,
    "VersionRequirement",
    Text {
        description: "A SemVer requirement as Cargo reads them: ^1.4, ~1.4.2, >=1.2, <2, =1.0.0, *",
        pattern: None,
        min_length: Some(1),
        max_length: 256,
        example: "^1.4",
    }
);
text_schema!(
    Checksum,
    "Checksum",
    Text {
        description: "A SHA-256 digest: 64 hexadecimal characters",
        pattern: Some("^[0-9a-fA-F]{64}$"),
        min_length: Some(64),
        max_length: 64,
        example: "8dadf5f05f3f3774a9794a12ec91bd2cea544c2150e51eeb3546602cc9a9a43c",
    }
);
text_schema!(
    Description,
    "Description",
    Text {
        description: "Free text of at most 4096 characters, without control characters other than tab and line breaks",
        pattern: Some(r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$"),
        min_length: None,
        max_length: Description::MAX_CHARS,
        example: "OpenTelemetry collector build for the edge fleet",
    }
);
text_schema!(
    FileName,
    "FileName",
    Text {
        description: "A plain file name of 1 to 255 bytes: not '.', and no '/', '\\', '..' or control characters",
        pattern: Some(r"^[^/\\\x00-\x1F\x7F-\x9F]+$"),
        min_length: Some(1),
        max_length: FileName::MAX_BYTES,
        example: "otelcol-contrib_0.98.0_linux_amd64.tar.gz",
    }
);

// NOTE: the closed sets' schemas are written out rather than derived: the derive does not
// see the `serde(rename)` that the `closed_set!` macro generates, and would document
// `Linux` where the API speaks `linux`.
macro_rules! closed_set_schema {
    ($ty:ty, $name:literal, $description:literal) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some($description))
                    .enum_values(Some(<$ty>::ALL.iter().map(|v| v.as_str())))
                    .into()
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

closed_set_schema!(
    Platform,
    "Platform",
    "The operating system a package is built for"
);
closed_set_schema!(Arch, "Arch", "The CPU architecture a package is built for");
closed_set_schema!(AuditAction, "AuditAction", "What an audit event records");
closed_set_schema!(
    AuditOutcome,
    "AuditOutcome",
    "Whether what an event records was done, or refused"
);
closed_set_schema!(
    Role,
    "Role",
    "What a user may do; each role includes the ones before it"
);
closed_set_schema!(
    ErrorCode,
    "ErrorCode",
    "Stable machine-readable error code (the list and each code's status: docs/errors.md)"
);
closed_set_schema!(
    InstallStatus,
    "InstallStatus",
    "Where an agent says one package stands (OpAMP's PackageStatusEnum)"
);
closed_set_schema!(TokenScope, "TokenScope", "What a token may do, at most");
closed_set_schema!(
    SignatureFormat,
    "SignatureFormat",
    "How a detached signature is encoded"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: PartialSchema>() -> serde_json::Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    #[test]
    fn closed_sets_are_documented_as_the_api_spells_them() {
        let platform = json::<Platform>();
        let values: Vec<&str> = platform["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(values, ["linux", "windows", "darwin"]);
        for value in values {
            assert!(value.parse::<Platform>().is_ok());
        }
        let arch = json::<Arch>();
        assert_eq!(arch["enum"], serde_json::json!(["amd64", "arm64", "386"]));
        let actions = json::<AuditAction>();
        for a in AuditAction::ALL {
            assert!(
                actions["enum"]
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::to_value(a).unwrap()),
                "{a}"
            );
        }
        for a in Arch::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }

    #[test]
    fn the_documented_examples_and_limits_are_what_parse_accepts() {
        let version = json::<Version>();
        assert_eq!(version["examples"][0], "1.4.2");
        assert!(Version::parse(version["examples"][0].as_str().unwrap()).is_ok());
        let checksum = json::<Checksum>();
        assert!(Checksum::parse(checksum["examples"][0].as_str().unwrap()).is_ok());
        let name = json::<PackageName>();
        assert!(PackageName::parse(name["examples"][0].as_str().unwrap()).is_ok());
        assert_eq!(name["maxLength"], PackageName::MAX_LEN);
    }
}
