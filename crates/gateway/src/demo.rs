//! `asc serve --demo`: a whole setup with no file and no keys.
//!
//! In-process mock providers of each flavor in regions `us` and `eu`, models over them,
//! two tenants (`prod`, `research`) with fixed demo keys, and one canary experiment.
//! The keys are fixed so the README's snippets work as written; the listeners bind to
//! loopback only.

/// The demo's data-plane key of tenant `prod`.
pub const PROD_KEY: &str = "sk-asc-demo-prod-0000000000000000";
/// The demo's data-plane key of tenant `research`.
pub const RESEARCH_KEY: &str = "sk-asc-demo-research-000000000000";
/// The demo's admin token (role `platform_admin`).
pub const ADMIN_TOKEN: &str = "asc-demo-admin-token-000000000000";

/// The demo config, in the same YAML a user would write.
pub fn config_yaml() -> String {
    format!(
        r#"
server:
  listen: 127.0.0.1:8080
  admin_listen: 127.0.0.1:8081
storage:
  database: sqlite://./asc-data/asc.db
audit:
  durability: batched
  signing_key_file: ./asc-data/audit-signing.key
admin:
  tokens:
    - {{name: demo-admin, token: "{ADMIN_TOKEN}", role: platform_admin}}
providers:
  - {{name: openai-us, kind: mock, flavor: openai, region: us}}
  - {{name: openai-eu, kind: mock, flavor: openai, region: eu}}
  - {{name: anthropic-us, kind: mock, flavor: anthropic, region: us}}
  - {{name: anthropic-eu, kind: mock, flavor: anthropic, region: eu}}
  - {{name: mistral-us, kind: mock, flavor: mistral, region: us}}
  - {{name: mistral-eu, kind: mock, flavor: mistral, region: eu}}
models:
  - name: chat
    targets:
      - {{provider: openai-us, model: gpt-4o-mini, weight: 90}}
      - {{provider: mistral-eu, model: mistral-small-latest, weight: 10}}
    fallbacks:
      - {{provider: anthropic-eu, model: claude-3-5-haiku-latest}}
    retries: 1
    timeout_ms: 30000
  - name: claude
    targets:
      - {{provider: anthropic-us, model: claude-3-5-haiku-latest}}
      - {{provider: anthropic-eu, model: claude-3-5-haiku-latest}}
  - name: embed
    targets:
      - {{provider: openai-us, model: text-embedding-3-small}}
      - {{provider: mistral-eu, model: mistral-embed}}
tenants:
  - name: prod
    allowed_models: ["*"]
    regions: [us, eu]
    keys:
      - {{name: demo, key: "{PROD_KEY}"}}
  - name: research
    allowed_models: [chat, claude, embed, "mistral-*"]
    regions: [eu]
    keys:
      - {{name: demo, key: "{RESEARCH_KEY}"}}
experiments:
  - name: mistral-large-canary
    model: chat
    tenants: [research]
    mode: canary
    candidate: {{provider: mistral-eu, model: mistral-large-latest}}
    sticky_by: [header:x-session-id, user]
    stages:
      - {{weight: 5, min_requests: 50, min_duration_s: 60, gate: abort_only}}
      - {{weight: 25, min_requests: 200, min_duration_s: 60, gate: noninferior}}
    alpha: 0.05
    breaker: {{max_error_rate: 0.2, window: 50}}
    on_success: promote
"#
    )
}

/// The banner `serve --demo` prints: keys, URLs and snippets to paste.
pub fn banner(data: &str, admin: &str) -> String {
    format!(
        r#"
ASC demo is running (in-process mock providers; no real provider is called).

  data plane   http://{data}/v1
  admin plane  http://{admin}/admin/v1   (token {ADMIN_TOKEN})
  console      http://{admin}/ui   (sign in with the admin token)
  tenant prod      key  {PROD_KEY}   (regions us, eu; every model)
  tenant research  key  {RESEARCH_KEY}   (region eu only)

Try it:

  curl -s http://{data}/v1/chat/completions \
    -H "Authorization: Bearer {PROD_KEY}" -H "Content-Type: application/json" \
    -d '{{"model": "chat", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python3 -c '
from openai import OpenAI
c = OpenAI(base_url="http://{data}/v1", api_key="{PROD_KEY}")
print(c.chat.completions.create(model="chat", messages=[{{"role": "user", "content": "Hello!"}}]).choices[0].message.content)'

  python3 -c '
import anthropic
c = anthropic.Anthropic(base_url="http://{data}", api_key="{PROD_KEY}")
print(c.messages.create(model="claude", max_tokens=100, messages=[{{"role": "user", "content": "Hello!"}}]).content[0].text)'

  curl -s http://{admin}/admin/v1/whoami -H "Authorization: Bearer {ADMIN_TOKEN}"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid() {
        let cfg = crate::config::load_str(&config_yaml(), &|_| None).unwrap();
        assert_eq!(cfg.tenants.len(), 2);
        assert_eq!(cfg.providers.len(), 6);
        for region in ["us", "eu"] {
            for kind in ["openai", "anthropic", "mistral"] {
                assert!(
                    cfg.providers
                        .iter()
                        .any(|p| p.region == region && p.name.starts_with(kind))
                );
            }
        }
    }
}
