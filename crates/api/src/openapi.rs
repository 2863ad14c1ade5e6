//! The OpenAPI 3.1 description of the API, generated from the handlers' annotations, and
//! Swagger UI (its assets compiled into the binary, so it works offline).

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::handlers;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentpkg",
        description = "Registry of OpAMP agent packages: one file per name, version, platform \
and architecture. Log in with `POST /api/v1/auth/login` and send the token as \
`Authorization: Bearer <token>`, or make an API token (`POST /api/v1/tokens`) for a \
machine and send that the same way. Roles: `viewer` reads and downloads, `publisher` also \
uploads and edits, `admin` also deletes and manages users. Every error is \
`{\"error\":{\"code\",\"message\",\"field\"?}}` with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        handlers::login::login,
        handlers::login::me,
        handlers::login::logout,
        handlers::packages::list::list,
        handlers::packages::upload::upload,
        handlers::packages::read::latest,
        handlers::packages::read::get,
        handlers::packages::read::by_coordinates,
        handlers::packages::change::patch,
        handlers::packages::change::delete,
        handlers::packages::read::versions,
        handlers::packages::owners::list,
        handlers::packages::owners::add,
        handlers::packages::owners::remove,
        handlers::packages::upload::put,
        handlers::packages::downloads::download,
        handlers::packages::downloads::download_by_coordinates,
        handlers::packages::downloads::download_latest,
        handlers::packages::signature::get,
        handlers::packages::signature::get_by_coordinates,
        handlers::packages::signature::attach,
        handlers::tus::options,
        handlers::tus::create,
        handlers::tus::head,
        handlers::tus::patch,
        handlers::tus::delete,
        handlers::direct::begin,
        handlers::direct::complete,
        handlers::keys::add,
        handlers::keys::list,
        handlers::keys::get,
        handlers::keys::remove,
        handlers::sigstore::add,
        handlers::sigstore::list,
        handlers::sigstore::get,
        handlers::sigstore::remove,
        handlers::mirrors::status,
        handlers::users::list,
        handlers::users::create,
        handlers::users::delete,
        handlers::users::patch,
        handlers::users::change_own_password,
        handlers::users::reset_password,
        handlers::tokens::create,
        handlers::tokens::list,
        handlers::tokens::revoke,
        handlers::audit::list,
        handlers::stats::package,
        handlers::stats::top,
        handlers::stats::storage,
        handlers::stats::run,
        handlers::opamp::http,
        handlers::agents::list,
        handlers::agents::get,
        handlers::agents::forget,
        handlers::assignments::create,
        handlers::assignments::list,
        handlers::assignments::get,
        handlers::assignments::patch,
        handlers::assignments::delete,
        handlers::assignments::status,
        handlers::rollouts::create,
        handlers::rollouts::list,
        handlers::rollouts::get,
        handlers::rollouts::approve,
        handlers::rollouts::pause,
        handlers::rollouts::resume,
        handlers::rollouts::abort,
        handlers::teams::create,
        handlers::teams::list,
        handlers::teams::add_member,
        handlers::teams::remove_member,
        handlers::health::healthz,
        handlers::health::readyz,
        handlers::health::healthz_root,
        handlers::health::readyz_root,
        crate::metrics::metrics,
    ),
    components(schemas(
        agentpkg_model::PackageName,
        agentpkg_model::Version,
        agentpkg_model::VersionRequirement,
        agentpkg_model::Checksum,
        agentpkg_model::Description,
        agentpkg_model::FileName,
    )),
    modifiers(&CommonResponses),
    security(("bearer" = [])),
    tags(
        (name = "auth", description = "Tokens"),
        (name = "packages", description = "Upload, list, inspect, yank and delete packages"),
        (name = "uploads", description = "Resumable and parallel uploads (tus 1.0.0)"),
        (name = "downloads", description = "Package bytes, by id, exact version or latest version"),
        (name = "users", description = "Accounts, roles and passwords"),
        (name = "tokens", description = "API tokens for machines"),
        (name = "audit", description = "Who did what (admin)"),
        (name = "statistics", description = "Downloads per day, the most downloaded packages, storage usage"),
        (name = "fleet", description = "Agents speaking OpAMP to the registry"),
        (name = "retention", description = "Deleting old builds by policy (admin)"),
        (name = "teams", description = "Users who own package names together"),
        (name = "signing", description = "Trusted OpenPGP keys, trusted Sigstore signers and package signatures"),
        (name = "mirror", description = "The verified mirror of upstream releases"),
        (name = "health", description = "Liveness and readiness probes"),
        (name = "operations", description = "Metrics"),
    ),
)]
pub struct ApiDoc;

/// Adds what every operation shares, so the handlers' annotations list only their own
/// answers: the bearer scheme; `401` and `403` wherever a token is needed; `503` wherever
/// the database or object storage is used.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        let error = |description: &str| -> RefOr<utoipa::openapi::Response> {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .into()
        };
        for (path, item) in &mut doc.paths.paths {
            let uses_backends = !path.ends_with("/healthz") && !path.ends_with("/readyz");
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
            ]
            .into_iter()
            .flatten()
            {
                // `security(())` marks the public operations.
                let public = operation
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
                let responses = &mut operation.responses.responses;
                if !public {
                    responses.entry("401".into()).or_insert_with(|| {
                        error("Missing, malformed, forged or expired bearer token")
                    });
                    responses
                        .entry("403".into())
                        .or_insert_with(|| error("The token's role is too small"));
                }
                if operation.request_body.is_some() {
                    responses.entry("408".into()).or_insert_with(|| {
                        error("The request body stalled or came too slowly (`body_timeout`)")
                    });
                }
                if uses_backends && path != "/metrics" {
                    responses.entry("503".into()).or_insert_with(|| {
                        error("The database or object storage is unavailable, or a limit is reached (`too_many_uploads`, `busy`); retry later")
                    });
                }
            }
        }
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
});

/// The OpenAPI document.
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

/// Swagger UI at `/swagger-ui/`, reading [`OPENAPI_PATH`]; nothing is fetched from the
/// internet (the validator badge, which would, is off).
pub(crate) fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/swagger-ui/{_:.*}").config(
        Config::new([OPENAPI_PATH])
            .validator_url("none")
            .try_it_out_enabled(true)
            .persist_authorization(true),
    )
}

/// `/swagger-ui` → `/swagger-ui/`.
pub(crate) async fn swagger_ui_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/swagger-ui/"))
        .finish()
}

/// Mounts the document, Swagger UI, and the redirect to it. Public: the description of the
/// API holds no data.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(OPENAPI_PATH, web::get().to(document))
        .route("/swagger-ui", web::get().to(swagger_ui_redirect))
        .service(swagger_ui());
}

#[cfg(test)]
mod tests {
    use agentpkg_model::ErrorCode;

    use super::*;

    fn document() -> serde_json::Value {
        serde_json::from_str(&DOCUMENT).unwrap()
    }

    fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
        out
    }

    #[test]
    fn the_document_is_openapi_3_1_with_a_bearer_jwt_scheme() {
        let doc = document();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        let scheme = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
        assert_eq!(doc["security"], serde_json::json!([{ "bearer": [] }]));
    }

    #[test]
    fn only_login_the_probes_and_tus_discovery_are_public_and_every_other_operation_documents_401_and_403()
     {
        let doc = document();
        let mut public = Vec::new();
        for (method, path, op) in operations(&doc) {
            if op["security"] == serde_json::json!([{}]) {
                public.push(format!("{method} {path}"));
                continue;
            }
            for status in ["401", "403"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
        }
        public.sort();
        assert_eq!(
            public,
            [
                "GET /api/v1/healthz",
                "GET /api/v1/readyz",
                "GET /healthz",
                "GET /readyz",
                "OPTIONS /api/v1/uploads",
                "POST /api/v1/auth/login",
            ]
        );
    }

    #[test]
    fn the_error_code_schema_lists_every_code_the_api_can_send() {
        let doc = document();
        let listed: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("an ErrorCode schema with an enum")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all);
        let code = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"];
        assert!(
            code.to_string().contains("#/components/schemas/ErrorCode"),
            "{code}"
        );
    }

    /// `docs/errors.md` is generated from [`ErrorCode`]: this test fails when the two differ,
    /// and with `AGENTPKG_BLESS=1` it writes the file instead.
    #[test]
    fn docs_errors_md_is_the_error_code_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
        let mut codes = ErrorCode::ALL.to_vec();
        codes.sort_by_key(|c| c.status());
        let mut text = String::from(ERRORS_MD_HEAD);
        for code in codes {
            text.push_str(&format!(
                "| {} | `{}` | {} |\n",
                code.status(),
                code.as_str(),
                code.meaning()
            ));
        }
        if std::env::var_os("AGENTPKG_BLESS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == text,
            "docs/errors.md differs from ErrorCode: run AGENTPKG_BLESS=1 cargo test -p agentpkg-api docs_errors_md"
        );
    }

    /// `docs/api.md`'s route table and the OpenAPI document name the same operations.
    #[test]
    fn the_route_table_in_docs_is_the_openapi_document() {
        use std::collections::BTreeSet;
        let shape = |path: &str| -> String {
            // Parameter names may differ; where they stand may not.
            let mut out = String::new();
            let mut in_param = false;
            for c in path.chars() {
                match c {
                    '{' => {
                        in_param = true;
                        out.push_str("{}");
                    }
                    '}' => in_param = false,
                    _ if in_param => {}
                    _ => out.push(c),
                }
            }
            out
        };
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(method, path, _)| (method, shape(&path)))
            .collect();
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
                .unwrap();
        // Rows: `| METHODS | `path`, `path` (root) | role | what |`. Paths are under
        // /api/v1 unless the row says `(root)`; health answers at both.
        let mut table = BTreeSet::new();
        for line in text.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Some(methods), Some(paths), Some(what)) =
                (cells.get(1), cells.get(2), cells.get(4))
            else {
                continue;
            };
            let is_methods = !methods.is_empty()
                && methods
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == ',' || c == ' ');
            if !is_methods || what.contains("not in the OpenAPI document") {
                continue;
            }
            let root = paths.contains("(root)");
            let both = paths.contains("also at the root") || what.contains("also at the root");
            for path in paths.split('`').skip(1).step_by(2) {
                let mut full = Vec::new();
                if root || both {
                    full.push(path.to_owned());
                }
                if !root {
                    full.push(format!("/api/v1{path}"));
                }
                for method in methods.split(',') {
                    for p in &full {
                        table.insert((method.trim().to_owned(), shape(p)));
                    }
                }
            }
        }
        let undocumented: Vec<_> = documented.difference(&table).collect();
        let unknown: Vec<_> = table.difference(&documented).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "in the OpenAPI document, not in docs/api.md: {undocumented:?}\nin docs/api.md, not in the OpenAPI document: {unknown:?}"
        );
    }

    const ERRORS_MD_HEAD: &str = "# Error codes

Every error is `{\"error\": {\"code\": \"…\", \"message\": \"…\", \"field\": \"…\"}}`: `code` is one
of the words below and never changes meaning, `message` is for a person (it names what is
missing or wrong and, where there is one, the next step), and `field` is present when one
request field is to blame. Each code has one HTTP status. Every `503`, and `423`
`upload_locked` and `429` `too_many_attempts`, carry `Retry-After`: the same request may be
sent again after it. A `500` never carries internals; the detail is in the server's log.

<!-- Generated from `ErrorCode` (crates/model/src/error_code.rs); a test fails when they
differ. Regenerate: AGENTPKG_BLESS=1 cargo test -p agentpkg-api docs_errors_md -->

| Status | Code | Meaning |
|---|---|---|
";

    #[test]
    fn every_error_response_is_the_error_body() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn package_bytes_are_documented_as_binary_with_their_checksum_headers() {
        let doc = document();
        let binary = serde_json::json!({ "type": "string", "format": "binary" });
        let resolve = |schema: &serde_json::Value| match schema["$ref"].as_str() {
            Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()].clone(),
            None => schema.clone(),
        };
        let mut downloads = 0;
        for (method, path, op) in operations(&doc) {
            if path.ends_with("/download") {
                downloads += 1;
                for status in ["200", "206"] {
                    let content = &op["responses"][status]["content"]["application/octet-stream"];
                    assert_eq!(
                        resolve(&content["schema"]),
                        binary,
                        "{method} {path} {status}"
                    );
                }
                let headers = &op["responses"]["200"]["headers"];
                for header in ["ETag", "X-Checksum-Sha256", "Content-Disposition"] {
                    assert!(headers[header].is_object(), "{method} {path} {header}");
                }
            }
            if method == "PUT" && path.contains("{version}") {
                let body = &op["requestBody"]["content"]["application/octet-stream"];
                assert_eq!(resolve(&body["schema"]), binary, "{method} {path}");
            }
        }
        assert_eq!(downloads, 3);
    }

    #[test]
    fn every_operation_has_a_summary_a_tag_and_a_success_response() {
        for (method, path, op) in operations(&document()) {
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path}"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path}"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}"
            );
        }
    }
}
