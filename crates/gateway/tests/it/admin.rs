//! The admin plane: RBAC as a table, keys and tenants taking effect on the very next
//! request, admin auth failures, config reload and versions.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, KEY, TestGateway};

const OPS: &str = "ops-token-0123456789abcdef";
const AUDITOR: &str = "auditor-token-0123456789ab";
const TA: &str = "tenant-admin-a-token-012345";
const VIEWER: &str = "viewer-a-token-0123456789ab";

fn admin_yaml() -> String {
    let tokens = format!(
        r#"admin:
  tokens:
    - {{name: ops, token: "{OPS}", role: platform_admin}}
    - {{name: aud, token: "{AUDITOR}", role: auditor}}
    - {{name: ta, token: "{TA}", role: tenant_admin, tenants: [a]}}
    - {{name: view, token: "{VIEWER}", role: viewer, tenants: [a]}}
"#
    );
    let tenants = r#"  - name: a
    allowed_models: ["*"]
    keys: [{name: k, key: "sk-tenant-a-static-00"}]
  - name: b
    allowed_models: ["*"]
    keys: [{name: k, key: "sk-tenant-b-static-00"}]"#;
    format!("{tokens}{}", support::config("", "", tenants))
}

async fn new_key(gw: &TestGateway, tenant: &str) -> (String, String) {
    let (st, v) = gw
        .admin(
            Method::POST,
            &format!("/admin/v1/tenants/{tenant}/keys"),
            OPS,
            Some(json!({"name": "k"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// Every role × every endpoint × own or other tenant: the expected status, and the
/// refused calls change nothing.
#[tokio::test]
async fn rbac_table() {
    let gw = TestGateway::start(&admin_yaml()).await;
    // An API tenant to patch.
    let (st, _) = gw
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            OPS,
            Some(json!({"name": "api-t", "allowed_models": ["m-openai"]})),
        )
        .await;
    assert_eq!(st, 201);
    let roles = [
        ("platform_admin", OPS),
        ("auditor", AUDITOR),
        ("tenant_admin", TA),
        ("viewer", VIEWER),
    ];
    // (method, path or key placeholder, body, expected per role [ops, auditor, ta(a), viewer(a)])
    type Row = (Method, &'static str, Option<Value>, [u16; 4]);
    let table: Vec<Row> = vec![
        (Method::GET, "/admin/v1/whoami", None, [200, 200, 200, 200]),
        (Method::GET, "/admin/v1/tenants", None, [200, 200, 200, 403]),
        (
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({"name": "NEW", "allowed_models": []})),
            [201, 403, 403, 403],
        ),
        (
            Method::GET,
            "/admin/v1/tenants/a",
            None,
            [200, 200, 200, 403],
        ),
        (
            Method::GET,
            "/admin/v1/tenants/b",
            None,
            [200, 200, 403, 403],
        ),
        (
            Method::PATCH,
            "/admin/v1/tenants/api-t",
            Some(json!({"log_content": true})),
            [200, 403, 403, 403],
        ),
        (
            Method::PATCH,
            "/admin/v1/tenants/a",
            Some(json!({"log_content": true})),
            [409, 403, 403, 403],
        ),
        (
            Method::DELETE,
            "/admin/v1/tenants/a",
            None,
            [409, 403, 403, 403],
        ),
        (
            Method::GET,
            "/admin/v1/tenants/a/keys",
            None,
            [200, 200, 200, 403],
        ),
        (
            Method::GET,
            "/admin/v1/tenants/b/keys",
            None,
            [200, 200, 403, 403],
        ),
        (
            Method::POST,
            "/admin/v1/tenants/a/keys",
            Some(json!({"name": "x"})),
            [201, 403, 201, 403],
        ),
        (
            Method::POST,
            "/admin/v1/tenants/b/keys",
            Some(json!({"name": "x"})),
            [201, 403, 403, 403],
        ),
        (Method::DELETE, "KEY_OF_A", None, [200, 403, 200, 403]),
        (Method::DELETE, "KEY_OF_B", None, [200, 403, 403, 403]),
        (
            Method::GET,
            "/admin/v1/config/versions",
            None,
            [200, 200, 403, 403],
        ),
        (
            Method::POST,
            "/admin/v1/config/reload",
            None,
            [409, 403, 403, 403],
        ),
        (
            Method::GET,
            "/admin/v1/nothing-here",
            None,
            [404, 404, 404, 404],
        ),
    ];
    let mut n = 0;
    for (method, path, body, expected) in table {
        for (i, (role, token)) in roles.iter().enumerate() {
            n += 1;
            let path = match path {
                "KEY_OF_A" => format!("/admin/v1/keys/{}", new_key(&gw, "a").await.0),
                "KEY_OF_B" => format!("/admin/v1/keys/{}", new_key(&gw, "b").await.0),
                p => p.to_owned(),
            };
            let body = body.clone().map(|mut b| {
                if b["name"] == "NEW" {
                    b["name"] = json!(format!("new-{n}"));
                }
                b
            });
            let keys_before = gw.state.store.keys(None).await.unwrap();
            let tenants_before = gw.state.store.tenants().await.unwrap().len();
            let (status, v) = gw.admin(method.clone(), &path, token, body).await;
            assert_eq!(status, expected[i], "{role} {method} {path}: {v}");
            if status >= 400 {
                assert!(
                    v["error"]["message"].is_string(),
                    "{role} {method} {path}: {v}"
                );
                let after = gw.state.store.keys(None).await.unwrap();
                assert_eq!(after, keys_before, "{role} {method} {path} changed keys");
                assert_eq!(
                    gw.state.store.tenants().await.unwrap().len(),
                    tenants_before
                );
            }
        }
    }
    // Listings are narrowed to the caller's tenants.
    let (_, v) = gw.admin(Method::GET, "/admin/v1/tenants", TA, None).await;
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    let (_, v) = gw.admin(Method::GET, "/admin/v1/whoami", TA, None).await;
    assert_eq!(v["role"], "tenant_admin");
    assert_eq!(v["tenants"], json!(["a"]));
    assert!(v["may"].as_array().unwrap().contains(&json!("write_keys")));
    assert!(
        !v["may"]
            .as_array()
            .unwrap()
            .contains(&json!("write_config"))
    );
    // The refusals were recorded with their actor.
    let events = gw.state.store.events().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "access_denied" && e.actor == "token:view")
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == "key_created" && e.actor == "token:ta")
    );
}

#[tokio::test]
async fn admin_auth_failures_are_401_and_recorded() {
    let gw = TestGateway::start(&admin_yaml()).await;
    let jwt_like = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln";
    for token in ["", "wrong-token-0000000000000", jwt_like, KEY] {
        let (st, v) = gw.admin(Method::GET, "/admin/v1/whoami", token, None).await;
        assert_eq!(st, 401, "{token}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized");
        assert!(!v.to_string().contains("wrong-token"), "never echo a token");
    }
    let denied = gw.state.store.events().await.unwrap();
    assert_eq!(
        denied.iter().filter(|e| e.kind == "login_denied").count(),
        4
    );
    // Data-plane keys are not admin tokens.
    let (st, _) = gw
        .admin(
            Method::GET,
            "/admin/v1/tenants",
            "sk-tenant-a-static-00",
            None,
        )
        .await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn keys_take_effect_and_stop_on_the_very_next_request() {
    let gw = TestGateway::start(&admin_yaml()).await;
    let (id, key) = new_key(&gw, "a").await;
    assert!(key.starts_with("sk-asc-"));
    assert_eq!(gw.chat_status(&key, "m-openai").await, 200);
    // Listing shows the prefix, never the key.
    let (_, v) = gw
        .admin(Method::GET, "/admin/v1/tenants/a/keys", OPS, None)
        .await;
    let text = v.to_string();
    assert!(!text.contains(&key));
    let listed = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["prefix"], &key[..12]);
    for field in [
        "id",
        "name",
        "prefix",
        "created_at",
        "expires_at",
        "revoked_at",
    ] {
        assert!(listed.get(field).is_some(), "{field}");
    }
    // Revoked: refused on the very next request.
    let (st, v) = gw
        .admin(Method::DELETE, &format!("/admin/v1/keys/{id}"), OPS, None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["revoked_at"].is_string());
    assert_eq!(gw.chat_status(&key, "m-openai").await, 401);

    // Expired: refused once its time passes.
    let (st, v) = gw
        .admin(
            Method::POST,
            "/admin/v1/tenants/a/keys",
            OPS,
            Some(json!({"name": "short", "expires_in": "1s"})),
        )
        .await;
    assert_eq!(st, 201);
    let short = v["key"].as_str().unwrap().to_owned();
    assert!(v["expires_at"].is_string());
    assert_eq!(gw.chat_status(&short, "m-openai").await, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(gw.chat_status(&short, "m-openai").await, 401);

    // Bad key requests.
    for body in [
        json!({}),
        json!({"name": "x", "expires_in": "soon"}),
        json!({"name": "x", "extra": 1}),
        json!({"name": ""}),
    ] {
        let (st, v) = gw
            .admin(
                Method::POST,
                "/admin/v1/tenants/a/keys",
                OPS,
                Some(body.clone()),
            )
            .await;
        assert_eq!(st, 400, "{body}: {v}");
    }
    let (st, _) = gw
        .admin(
            Method::POST,
            "/admin/v1/tenants/ghost/keys",
            OPS,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = gw
        .admin(Method::DELETE, "/admin/v1/keys/key_nonexistent", OPS, None)
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn api_tenants_are_validated_enforced_and_deleting_one_revokes_its_keys() {
    let gw = TestGateway::start(&admin_yaml()).await;
    let bad = [
        (
            json!({"name": "x", "allowed_models": ["no-such-model"]}),
            400,
        ),
        (
            json!({"name": "x", "allowed_models": [], "surprise": 1}),
            400,
        ),
        (json!({"name": "x", "regions": ["mars"]}), 400),
        (
            json!({"name": "x", "keys": [{"name": "k", "key": "sk-static-000000"}]}),
            400,
        ),
        (json!({"name": "a"}), 409),
        (json!({"allowed_models": []}), 400),
    ];
    for (body, status) in bad {
        let (st, v) = gw
            .admin(Method::POST, "/admin/v1/tenants", OPS, Some(body.clone()))
            .await;
        assert_eq!(st, status, "{body}: {v}");
    }
    assert!(
        gw.state.store.tenants().await.unwrap().is_empty(),
        "nothing stored"
    );

    let (st, v) = gw
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            OPS,
            Some(json!({"name": "team-x", "allowed_models": ["m-openai"], "regions": ["us"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["managed_by"], "api");
    let (_, v) = gw
        .admin(Method::GET, "/admin/v1/tenants/a", OPS, None)
        .await;
    assert_eq!(v["managed_by"], "config");
    assert!(v.get("keys").is_none(), "no key material in tenant views");

    let (_, key) = new_key(&gw, "team-x").await;
    assert_eq!(gw.chat_status(&key, "m-openai").await, 200);
    assert_eq!(
        gw.chat_status(&key, "m-anthropic").await,
        403,
        "allow-list applies"
    );
    // A change applies to the next request.
    let (st, _) = gw
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/team-x",
            OPS,
            Some(json!({"allowed_models": ["m-anthropic"]})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(gw.chat_status(&key, "m-anthropic").await, 200);
    assert_eq!(gw.chat_status(&key, "m-openai").await, 403);
    let (st, _) = gw
        .admin(
            Method::PATCH,
            "/admin/v1/tenants/team-x",
            OPS,
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(st, 400);
    // Deleting the tenant revokes its keys.
    let (st, v) = gw
        .admin(Method::DELETE, "/admin/v1/tenants/team-x", OPS, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["keys_revoked"], 1);
    assert_eq!(gw.chat_status(&key, "m-anthropic").await, 401);
    let (st, _) = gw
        .admin(Method::GET, "/admin/v1/tenants/team-x", OPS, None)
        .await;
    assert_eq!(st, 404);
}

/// A gateway on `admin_yaml()` written to a file of its own (so it can be reloaded):
/// the file's directory, the file, what it says, the gateway.
async fn file_gateway() -> (std::path::PathBuf, std::path::PathBuf, String, TestGateway) {
    let dir = std::env::temp_dir().join(format!("asc-reload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("asc.yaml");
    let v1 = admin_yaml();
    std::fs::write(&path, &v1).unwrap();
    let gw = TestGateway::start_file(&path).await;
    (dir, path, v1, gw)
}

#[tokio::test]
async fn reload_swaps_a_valid_file_refuses_an_invalid_one_and_keeps_versions() {
    let (dir, path, v1, gw) = file_gateway().await;
    let hash1 = gw.state.live.load().config.hash.clone();

    // Invalid files: refused whole, the running config stays.
    for bad in [
        v1.replace(
            "allowed_models: [\"*\"]",
            "allowed_models: [\"*\"]\n    colour: blue",
        ),
        v1.replace("region: eu", "region: \"${env:ASC_SURELY_UNSET_VAR}\""),
        v1.replace(
            "targets: [{provider: mock-openai",
            "targets: [{provider: nobody",
        ),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let (st, v) = gw
            .admin(Method::POST, "/admin/v1/config/reload", OPS, None)
            .await;
        assert_eq!(st, 400, "{v}");
        assert!(!v["error"]["details"].as_array().unwrap().is_empty());
        assert_eq!(gw.state.live.load().config.hash, hash1);
        assert_eq!(gw.chat_status(KEY, "m-openai").await, 200);
    }

    // Requests keep succeeding while the file is swapped back and forth.
    let v2 = v1.replace("  - name: m-mistral", "  - name: m-extra\n    targets: [{provider: mock-openai, model: gpt-4o}]\n  - name: m-mistral");
    let load = {
        let url = gw.url.clone();
        let http = gw.http.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..200 {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(KEY)
                    .json(&json!({"model": "m-openai", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
                let body = r.bytes().await.unwrap();
                assert!(support::openai_stream(&body).terminated);
            }
            statuses
        })
    };
    for i in 0..10 {
        std::fs::write(&path, if i % 2 == 0 { &v2 } else { &v1 }).unwrap();
        let (st, v) = gw
            .admin(Method::POST, "/admin/v1/config/reload", OPS, None)
            .await;
        assert_eq!(st, 200, "{v}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // Ends on v1 (i = 9): m-extra gone. One more to v2 and it is servable.
    std::fs::write(&path, &v2).unwrap();
    assert_eq!(
        gw.admin(Method::POST, "/admin/v1/config/reload", OPS, None)
            .await
            .0,
        200
    );
    assert_eq!(gw.chat_status(KEY, "m-extra").await, 200);

    let (_, v) = gw
        .admin(Method::GET, "/admin/v1/config/versions", AUDITOR, None)
        .await;
    let versions = v["data"].as_array().unwrap();
    assert_eq!(versions.len(), 12, "startup + 11 reloads");
    assert_eq!(versions[0]["actor"], "token:ops");
    assert!(versions[0]["diff"].as_str().unwrap().contains("m-extra"));
    assert_eq!(versions[11]["actor"], "startup");
    assert!(!v.to_string().contains(OPS), "no secrets in versions");
    let events = gw.state.store.events().await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "config_rejected")
            .count(),
        3
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A query parameter that means nothing is a 400 in the API's JSON error shape, naming
/// the parameter, never an empty or a whole answer; good bounds (a date, a UTC time)
/// select as they say.
#[tokio::test]
async fn bad_query_parameters_are_400_with_what_was_expected() {
    let gw = TestGateway::start(&admin_yaml()).await;
    assert_eq!(gw.chat_status(KEY, "m-openai").await, 200);
    for (path, names) in [
        ("/admin/v1/records?since=garbage", "`since`"),
        ("/admin/v1/records?until=notatime", "`until`"),
        (
            "/admin/v1/records?since=2026-12-01T09:30:00%2B02:00",
            "`since`",
        ),
        ("/admin/v1/records?status=bogus", "`status`"),
        ("/admin/v1/records?limit=0", "`limit`"),
        ("/admin/v1/records?limit=-1", "`limit`"),
        ("/admin/v1/records?limit=5000", "`limit`"),
        ("/admin/v1/records?limit=abc", "limit"),
        ("/admin/v1/timeline?since=garbage", "`since`"),
        ("/admin/v1/timeline?limit=abc", "limit"),
        ("/admin/v1/audit/export?since=garbage", "`since`"),
        ("/admin/v1/audit/export?until=yesterday", "`until`"),
    ] {
        let (st, v) = gw.admin(Method::GET, path, OPS, None).await;
        assert_eq!(st, 400, "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{path}: {v}");
    }
    let count = |v: &Value| v["data"].as_array().map_or(0, Vec::len);
    let (st, v) = gw
        .admin(
            Method::GET,
            "/admin/v1/records?since=2000-01-01&status=success&limit=5",
            OPS,
            None,
        )
        .await;
    assert_eq!((st, count(&v)), (200, 1), "{v}");
    let (st, v) = gw
        .admin(
            Method::GET,
            "/admin/v1/records?until=2000-01-01T00:00:00Z",
            OPS,
            None,
        )
        .await;
    assert_eq!((st, count(&v)), (200, 0), "{v}");
}

/// A budgeted tenant made by the admin API cannot be led around its budget by a file
/// that adds an unpriced model it may reach: the reload is refused, naming the tenant,
/// and the running config stays. Without that tenant the same file loads.
#[tokio::test]
async fn a_reload_that_gives_a_budgeted_api_tenant_an_unpriced_model_is_refused() {
    let (dir, path, v1, gw) = file_gateway().await;
    let hash1 = gw.state.live.load().config.hash.clone();
    let tenant = json!({"name": "t9", "allowed_models": ["*"],
        "budget": {"limit_usd": 5, "period": "month", "on_exceed": "block"}});
    let (st, v) = gw
        .admin(Method::POST, "/admin/v1/tenants", OPS, Some(tenant))
        .await;
    assert_eq!(st, 201, "{v}");
    let unpriced = v1.replace(
        "  - name: m-mistral",
        "  - name: homebrew\n    targets: [{provider: mock-openai, model: homebrew-1}]\n  - name: m-mistral",
    );
    assert_ne!(unpriced, v1);
    std::fs::write(&path, &unpriced).unwrap();
    let (st, v) = gw
        .admin(Method::POST, "/admin/v1/config/reload", OPS, None)
        .await;
    assert_eq!(st, 400, "{v}");
    let details = v["error"]["details"].to_string();
    assert!(details.contains("tenants[api:t9].budget"), "{v}");
    assert!(details.contains("homebrew-1"), "{v}");
    assert_eq!(
        gw.state.live.load().config.hash,
        hash1,
        "the running config stays"
    );
    assert!(gw.state.live.load().config.model("homebrew").is_none());

    let (st, _) = gw
        .admin(Method::DELETE, "/admin/v1/tenants/t9", OPS, None)
        .await;
    assert!(st == 200 || st == 204, "{st}");
    let (st, v) = gw
        .admin(Method::POST, "/admin/v1/config/reload", OPS, None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(gw.state.live.load().config.model("homebrew").is_some());
    std::fs::remove_dir_all(dir).unwrap();
}

mod oidc {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;

    /// An Ed25519 key generated for this test, its JWK and a signer.
    fn key(kid: &str) -> (EncodingKey, Value) {
        let seed: [u8; 32] = rand::random();
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(public.to_bytes())});
        (EncodingKey::from_ed_der(&der), jwk)
    }

    fn token(enc: &EncodingKey, kid: &str, claims: Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &claims, enc).unwrap()
    }

    #[tokio::test]
    async fn oidc_tokens_map_to_roles_and_bad_ones_are_refused() {
        let (enc, jwk) = key("k1");
        let (other, _) = key("k1");
        let jwks = json!({"keys": [jwk]});
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let j = jwks.clone();
                async move { axum::Json(j) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let yaml = format!(
            "admin:\n  oidc:\n    issuer: https://sso.test\n    audience: asc\n    jwks_url: http://{addr}/jwks\n    role_claim: groups\n    roles: {{asc-admins: platform_admin, team-a: tenant_admin}}\n    tenant_claim: tenants\n{}",
            support::config("", "", "  - {name: a, allowed_models: [\"*\"]}")
        );
        let gw = TestGateway::start(&yaml).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = |groups: Value, extra: Value| {
            let mut c = json!({"iss": "https://sso.test", "aud": "asc", "sub": "alice",
                "email": "alice@example.com", "exp": now + 300, "groups": groups, "tenants": ["a"]});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        let admin = token(&enc, "k1", claims(json!(["asc-admins"]), json!({})));
        let (st, v) = gw
            .admin(Method::GET, "/admin/v1/whoami", &admin, None)
            .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["role"], "platform_admin");
        assert_eq!(v["actor"], "oidc:alice@example.com");
        assert_eq!(v["via"], "oidc");

        let ta = token(&enc, "k1", claims(json!("team-a"), json!({})));
        assert_eq!(
            gw.admin(Method::GET, "/admin/v1/tenants/a/keys", &ta, None)
                .await
                .0,
            200
        );
        assert_eq!(
            gw.admin(Method::GET, "/admin/v1/config/versions", &ta, None)
                .await
                .0,
            403
        );

        let refused = [
            (
                "expired",
                token(
                    &enc,
                    "k1",
                    claims(json!(["asc-admins"]), json!({"exp": now - 3600})),
                ),
            ),
            (
                "other key",
                token(&other, "k1", claims(json!(["asc-admins"]), json!({}))),
            ),
            (
                "wrong audience",
                token(
                    &enc,
                    "k1",
                    claims(json!(["asc-admins"]), json!({"aud": "other"})),
                ),
            ),
            (
                "wrong issuer",
                token(
                    &enc,
                    "k1",
                    claims(json!(["asc-admins"]), json!({"iss": "https://evil"})),
                ),
            ),
            (
                "no role",
                token(&enc, "k1", claims(json!(["nobody"]), json!({}))),
            ),
            ("alg none", {
                let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k1"}"#);
                let c =
                    URL_SAFE_NO_PAD.encode(claims(json!(["asc-admins"]), json!({})).to_string());
                format!("{h}.{c}.")
            }),
            ("hmac", {
                let secret = URL_SAFE_NO_PAD.encode(b"public key bytes");
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some("k1".into());
                jsonwebtoken::encode(
                    &h,
                    &claims(json!(["asc-admins"]), json!({})),
                    &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
                )
                .unwrap()
            }),
        ];
        for (what, t) in refused {
            let (st, v) = gw.admin(Method::GET, "/admin/v1/whoami", &t, None).await;
            assert_eq!(st, 401, "{what}: {v}");
        }
    }
}
