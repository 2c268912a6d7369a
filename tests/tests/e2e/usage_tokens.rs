//! Usage tokens: `POST /api/v1/usage/tokens` with a tenant's API key mints a short-lived token
//! that reads `GET /api/v1/usage` (through Envoy, as a dashboard would) and nothing else.
//!
//! Setup: a stack; tokens are minted and used through Envoy (the dashboard's backend mints,
//! the browser reads; both reach the public listener only through the edge). Expected: the token reads the key's tenant's usage;
//! it is refused as an API key at the edge, by billing and by minting; a tampered one is a
//! 401 problem `invalid_usage_token`; a suspended tenant's is refused; with a 1 s lifetime it
//! expires (401 `usage_token_expired`); minting spends the tenant's usage budget.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tollgate_e2e::{Stack, StackOptions, Tenant, within};

/// Mints a token with `key`; the raw answer.
async fn mint(stack: &Stack, key: &str) -> Response {
    stack
        .client()
        .post(stack.url("/api/v1/usage/tokens"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("mint a usage token")
}

async fn minted_token(stack: &Stack, tenant: &Tenant) -> (String, u64) {
    let response = mint(stack, &tenant.key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("token JSON");
    let token = body["token"].as_str().expect("token").to_owned();
    (token, body["expires_at"].as_u64().expect("expires_at"))
}

/// `GET /api/v1/usage` through Envoy with `Authorization: Bearer <credential>`.
async fn usage_with_bearer(stack: &Stack, credential: &str) -> Response {
    stack
        .client()
        .get(stack.url("/api/v1/usage"))
        .bearer_auth(credential)
        .send()
        .await
        .expect("usage")
}

/// The status and the problem's `code` of an error answer, checking it is problem+json.
async fn problem(response: Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "a {status} answer is a problem document"
    );
    let body: Value = response.json().await.expect("problem JSON");
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test]
async fn a_usage_token_reads_usage_and_nothing_else() {
    let stack = Stack::start(StackOptions::default()).await;
    let tenant = stack.create_tenant("standard").await;
    let other = stack.create_tenant("standard").await;
    for _ in 0..3 {
        assert_eq!(
            stack.call("/api/v1/ingest", &tenant.key).await.status(),
            200
        );
    }

    let (token, expires_at) = minted_token(&stack, &tenant).await;
    assert!(token.starts_with("tgu_"), "{token}");
    assert!(
        !token.contains(&tenant.key),
        "the token does not carry the key"
    );
    let lifetime = expires_at.saturating_sub(now_secs());
    assert!(
        (890..=900).contains(&lifetime),
        "15 minutes by default: {lifetime}"
    );

    // Through Envoy, as the panel calls it: the key's tenant's figures.
    let response = usage_with_bearer(&stack, &token).await;
    assert_eq!(response.status(), 200);
    let usage: Value = response.json().await.expect("usage JSON");
    assert_eq!(usage["tenant_id"], tenant.id.as_str());
    assert_eq!(usage["used"], 3);
    // In the API-key header too (where the panel puts whatever its tokenProvider returns).
    let usage = stack.usage(&token).await;
    assert_eq!(usage["tenant_id"], tenant.id.as_str());

    // Never an API key: refused at the edge on a limited route (no admission spent)...
    let response = stack.call("/api/v1/ingest", &token).await;
    assert_eq!(
        response.status(),
        401,
        "the filter refuses a token as a key"
    );
    assert_eq!(stack.usage(&tenant.key).await["used"], 3);
    // ...by billing, and by minting (a token cannot renew itself).
    let response = stack
        .client()
        .post(stack.control_planes[0].url("/api/v1/billing/portal"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("portal");
    assert_eq!(
        problem(response).await,
        (StatusCode::UNAUTHORIZED, "invalid_api_key".to_owned())
    );
    assert_eq!(
        problem(mint(&stack, &token).await).await,
        (StatusCode::UNAUTHORIZED, "invalid_api_key".to_owned())
    );

    // Tampered with: another tenant's id, a later expiry, a changed MAC.
    let forged_tenant = token.replacen(tenant.id.as_str(), other.id.as_str(), 1);
    let forged_expiry = token.replacen(
        &format!(".{expires_at}."),
        &format!(".{}.", expires_at + 86_400),
        1,
    );
    let mut forged_mac = token.clone();
    let last = forged_mac.pop().map(|c| if c == 'a' { 'b' } else { 'a' });
    forged_mac.extend(last);
    for forged in [&forged_tenant, &forged_expiry, &forged_mac] {
        assert_ne!(forged, &token);
        let response = usage_with_bearer(&stack, forged).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"tollgate\", error=\"invalid_token\""
        );
        assert_eq!(
            problem(response).await,
            (StatusCode::UNAUTHORIZED, "invalid_usage_token".to_owned()),
            "{forged}"
        );
    }

    // A suspended tenant's token is refused, and it cannot mint; resumed, the token works.
    stack
        .patch_tenant(&tenant.id, json!({"suspended": true}))
        .await;
    assert_eq!(
        problem(usage_with_bearer(&stack, &token).await).await,
        (StatusCode::FORBIDDEN, "tenant_suspended".to_owned())
    );
    assert_eq!(
        problem(mint(&stack, &tenant.key).await).await,
        (StatusCode::FORBIDDEN, "tenant_suspended".to_owned())
    );
    stack
        .patch_tenant(&tenant.id, json!({"suspended": false}))
        .await;
    assert_eq!(usage_with_bearer(&stack, &token).await.status(), 200);

    // Revoking the key that minted it (say it leaked) voids the token at once.
    stack.revoke_first_key(&tenant).await;
    assert_eq!(
        problem(usage_with_bearer(&stack, &token).await).await,
        (StatusCode::UNAUTHORIZED, "invalid_usage_token".to_owned()),
        "the minting key was revoked"
    );
}

#[tokio::test]
async fn a_usage_token_expires_and_minting_spends_the_usage_budget() {
    let options = StackOptions::default()
        .control_plane_env("TOLLGATE_USAGE_TOKEN_TTL_SECS", "1")
        // One a second, bursts of two.
        .control_plane_env("TOLLGATE_USAGE_BUDGET", "1");
    let stack = Stack::start(options).await;
    let tenant = stack.create_tenant("standard").await;

    let (token, _) = minted_token(&stack, &tenant).await;
    let _ = minted_token(&stack, &tenant).await;
    let (status, code) = problem(mint(&stack, &tenant.key).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "the third mint at once is over the usage budget"
    );

    // Every token of the tenant spends one budget: two tokens (or a thousand) read no more
    // than one. Four reads at once against one a second with bursts of two: at least one 429.
    // (The key's own budget refills at one a second: the next mint waits for it.)
    let mut second = None;
    for _ in 0..50 {
        let response = mint(&stack, &tenant.key).await;
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.expect("token JSON");
            second = body["token"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (first, second) = (token.clone(), second.expect("a second token"));
    let mut over_budget = 0;
    for credential in [&first, &second, &first, &second] {
        let response = usage_with_bearer(&stack, credential).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            over_budget += 1;
        }
    }
    assert!(over_budget >= 1, "tokens share their tenant's usage budget");

    // A 1 s lifetime: the token is refused as expired (not as invalid) soon after.
    within(Duration::from_secs(5), "the token expires", || async {
        let response = usage_with_bearer(&stack, &token).await;
        response.status() == StatusCode::UNAUTHORIZED
            && problem(response).await.1 == "usage_token_expired"
    })
    .await;
}
