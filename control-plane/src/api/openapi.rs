//! The OpenAPI 3.1 documents of the two listeners, generated from the handlers' annotations
//! and the wire types' derives, so they describe what the code serves.
//!
//! Each listener documents exactly what it serves, at `GET /openapi.json`: the public one the
//! tenant-facing API (usage, usage tokens, tiers, billing, health), the internal one the admin
//! API (never the public part: a document listing paths its listener does not serve would be
//! wrong, and operators reach the public API through Envoy). The decision endpoint is Envoy's
//! protocol (headers only, docs/protocol.md) and `/metrics` is Prometheus text, so neither is
//! here. `docs/openapi.json` and `docs/openapi-admin.json` are these documents, committed; a
//! test fails when they are stale (`TOLLGATE_UPDATE_OPENAPI=1` rewrites them, or `make
//! openapi`).
//!
//! Every error answer is a [`Problem`]. Answers any operation may give (the public budgets'
//! 429, shedding's 503; the admin token's 401) are added to every operation here rather than
//! repeated on each handler.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::Problem;
use super::{admin, admin_api_keys, billing, usage};

/// The media type of every error answer.
pub const PROBLEM: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate public API",
        description = "The tenant-facing API of Tollgate's control-plane: usage (by API key or \
            usage token), usage tokens, tiers, billing sessions, Stripe's webhook, health. \
            Served on the control-plane's public listener (and through Envoy). Errors are \
            RFC 9457 problem documents with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::healthz,
        super::readyz,
        usage::tenant_usage,
        usage::mint_usage_token,
        usage::tiers,
        billing::checkout,
        billing::portal,
        billing::webhook,
    ),
    components(schemas(Problem)),
    modifiers(&PublicSecurity, &PublicAnswers),
    tags(
        (name = "usage", description = "A tenant's usage, and tokens to read it"),
        (name = "tiers", description = "What each tier offers"),
        (name = "billing", description = "Stripe Checkout, the Billing Portal, Stripe's webhook"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct PublicApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "Operators' API of Tollgate's control-plane: tenants, their API keys, \
            usage, and their link to Stripe. Served on the control-plane's internal listener \
            only; every call needs `Authorization: Bearer <TOLLGATE_ADMIN_TOKEN>`. Errors are \
            RFC 9457 problem documents with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        admin::create_tenant,
        usage::list_tenants,
        admin::get_tenant,
        admin::update_tenant,
        usage::admin_usage,
        admin_api_keys::list,
        admin_api_keys::issue,
        admin_api_keys::revoke,
        admin_api_keys::rotate,
        billing::unlink,
        billing::sync_tenant,
        billing::sync_all,
    ),
    components(schemas(Problem)),
    modifiers(&AdminSecurity, &AdminAnswers),
    security(("admin_token" = [])),
    tags(
        (name = "tenants", description = "Tenants and their usage"),
        (name = "keys", description = "A tenant's API keys"),
        (name = "billing", description = "A tenant's link to Stripe"),
    )
)]
struct AdminApi;

/// The public listener's document, for the default API-key header (the committed one).
pub fn public_document() -> utoipa::openapi::OpenApi {
    public_document_for(DEFAULT_API_KEY_HEADER)
}

/// The public listener's document when tenants send their key in `api_key_header`
/// (`TOLLGATE_API_KEY_HEADER`): what that listener serves.
pub fn public_document_for(api_key_header: &str) -> utoipa::openapi::OpenApi {
    let mut document = PublicApi::openapi();
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            api_key_header,
            "The tenant's API key (the header is `TOLLGATE_API_KEY_HEADER`).",
        ))),
    );
    document
}

/// `TOLLGATE_API_KEY_HEADER`'s default.
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

/// The internal listener's document.
pub fn admin_document() -> utoipa::openapi::OpenApi {
    AdminApi::openapi()
}

/// A document as served and committed: pretty JSON with a final newline.
pub fn render(document: &utoipa::openapi::OpenApi) -> String {
    // Serializing plain maps and strings cannot fail; an empty answer would fail the tests.
    let mut text = document.to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

struct PublicSecurity;

impl Modify for PublicSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // The `api_key` scheme names the configured header: see `public_document_for`.
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The tenant's API key, or (on `GET /api/v1/usage` only) a usage token.",
                    ))
                    .build(),
            ),
        );
    }
}

struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`TOLLGATE_ADMIN_TOKEN`"))
                    .build(),
            ),
        );
    }
}

/// Answers every operation of the public listener may give, whatever its handler does.
struct PublicAnswers;

impl Modify for PublicAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        add_to_every_operation(
            openapi,
            &[
                (
                    "429",
                    "The caller's budget on this endpoint is spent (`rate_limited`); \
                     `Retry-After` says when to retry.",
                ),
                ("500", "A bug (`internal_error`); logged."),
                (
                    "503",
                    "Too many requests in flight (`overloaded`), or a store did not answer \
                     (`store_unavailable`); retry shortly.",
                ),
            ],
        );
    }
}

/// Answers every admin operation may give, whatever its handler does.
struct AdminAnswers;

impl Modify for AdminAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        add_to_every_operation(
            openapi,
            &[
                ("401", "No admin token, or the wrong one (`unauthorized`)."),
                ("500", "A bug (`internal_error`); logged."),
            ],
        );
    }
}

/// Adds each (status, description) problem answer to every operation that does not document
/// that status itself.
fn add_to_every_operation(openapi: &mut utoipa::openapi::OpenApi, common: &[(&str, &str)]) {
    {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in common {
                    let responses = &mut operation.responses.responses;
                    if !responses.contains_key(*status) {
                        responses.insert((*status).to_owned(), problem(description));
                    }
                }
            }
        }
    }
}

/// A problem answer, for the common ones.
fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM,
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}
