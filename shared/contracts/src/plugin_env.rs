//! The commercetools–Klaviyo plugin's environment variables, read as aliases of sluice's
//! own settings, so a plugin deployment switches to sluice by changing its image
//! (`docs/klaviyo-sync.md`, "Migrating from the plugin").
//!
//! | plugin variable | sluice setting |
//! |---|---|
//! | `CT_API_URL` | `SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__API_URL` |
//! | `CT_AUTH_URL` | `…__ACCOUNTS__DEFAULT__AUTH_URL` |
//! | `CT_PROJECT_ID` | `…__ACCOUNTS__DEFAULT__PROJECT_KEY` |
//! | `CT_API_CLIENT` (`{"clientId": …, "secret": …}`) | `…__ACCOUNTS__DEFAULT__CLIENT_ID`, `…__CLIENT_SECRET` |
//! | `CT_SCOPE` | `…__ACCOUNTS__DEFAULT__SCOPES` |
//! | `KLAVIYO_AUTH_KEY` | `SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY`, and a destination `klaviyo` of kind `klaviyo` |
//! | `PRODUCT_URL_TEMPLATE`, `PREFERRED_LOCALE`, `PREFERRED_CURRENCY` | `SLUICE__DESTINATIONS__KLAVIYO__…` of the same name |
//! | `PUB_SUB_PORT` | the port of `SLUICE__SYNC_API__BIND` |
//!
//! A `SLUICE__…` variable that is set wins over its alias.

use std::collections::BTreeMap;

const CT: &str = "SLUICE__CONNECTORS__COMMERCETOOLS__ACCOUNTS__DEFAULT__";
const KLAVIYO_DESTINATION: &str = "SLUICE__DESTINATIONS__KLAVIYO__";

/// `env` with each plugin variable's sluice setting added where that setting is not set
/// itself. The plugin variables stay in the map (they do not start with `SLUICE__`, so the
/// settings loader ignores them).
///
/// # Errors
/// `CT_API_CLIENT` that is not the plugin's JSON object `{"clientId": "…", "secret": "…"}`
/// (the message names the variable and the missing field, never the secret).
pub fn with_plugin_aliases(
    mut env: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut aliases: Vec<(String, String)> = Vec::new();
    let simple = [
        ("CT_API_URL", format!("{CT}API_URL")),
        ("CT_AUTH_URL", format!("{CT}AUTH_URL")),
        ("CT_PROJECT_ID", format!("{CT}PROJECT_KEY")),
        ("CT_SCOPE", format!("{CT}SCOPES")),
        (
            "KLAVIYO_AUTH_KEY",
            "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY".to_string(),
        ),
        (
            "PRODUCT_URL_TEMPLATE",
            format!("{KLAVIYO_DESTINATION}PRODUCT_URL_TEMPLATE"),
        ),
        (
            "PREFERRED_LOCALE",
            format!("{KLAVIYO_DESTINATION}PREFERRED_LOCALE"),
        ),
        (
            "PREFERRED_CURRENCY",
            format!("{KLAVIYO_DESTINATION}PREFERRED_CURRENCY"),
        ),
    ];
    for (plugin, sluice) in simple {
        if let Some(value) = env.get(plugin).filter(|v| !v.is_empty()) {
            aliases.push((sluice, value.clone()));
        }
    }
    if let Some(client) = env.get("CT_API_CLIENT").filter(|v| !v.is_empty()) {
        let parsed: serde_json::Value = serde_json::from_str(client).map_err(|e| {
            format!(
                "CT_API_CLIENT is not JSON like {{\"clientId\": \"…\", \"secret\": \"…\"}} \
                 (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        for (field, key) in [("clientId", "CLIENT_ID"), ("secret", "CLIENT_SECRET")] {
            let value = parsed.get(field).and_then(|v| v.as_str()).ok_or_else(|| {
                format!("CT_API_CLIENT has no string field {field:?} (expected {{\"clientId\": \"…\", \"secret\": \"…\"}})")
            })?;
            aliases.push((format!("{CT}{key}"), value.to_string()));
        }
    }
    if env.get("KLAVIYO_AUTH_KEY").is_some_and(|v| !v.is_empty()) {
        aliases.push((format!("{KLAVIYO_DESTINATION}KIND"), "klaviyo".to_string()));
    }
    if let Some(port) = env.get("PUB_SUB_PORT").filter(|v| !v.is_empty()) {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("PUB_SUB_PORT {port:?} is not a port number"))?;
        aliases.push((
            "SLUICE__SYNC_API__BIND".to_string(),
            format!("0.0.0.0:{port}"),
        ));
    }
    for (key, value) in aliases {
        env.entry(key).or_insert(value);
    }
    Ok(env)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plugin_variables_become_settings_and_sluice_variables_win() {
        let out = with_plugin_aliases(env(&[
            ("CT_API_URL", "https://api.example"),
            ("CT_AUTH_URL", "https://auth.example"),
            ("CT_PROJECT_ID", "shop"),
            ("CT_SCOPE", "view_orders:shop"),
            ("CT_API_CLIENT", r#"{"clientId":"cid","secret":"s3cret"}"#),
            ("KLAVIYO_AUTH_KEY", "pk_abc"),
            ("PREFERRED_LOCALE", "de-DE"),
            ("PUB_SUB_PORT", "7000"),
            ("SLUICE__DESTINATIONS__KLAVIYO__PREFERRED_LOCALE", "en-US"),
        ]))
        .unwrap();
        assert_eq!(out[&format!("{CT}API_URL")], "https://api.example");
        assert_eq!(out[&format!("{CT}AUTH_URL")], "https://auth.example");
        assert_eq!(out[&format!("{CT}PROJECT_KEY")], "shop");
        assert_eq!(out[&format!("{CT}SCOPES")], "view_orders:shop");
        assert_eq!(out[&format!("{CT}CLIENT_ID")], "cid");
        assert_eq!(out[&format!("{CT}CLIENT_SECRET")], "s3cret");
        assert_eq!(
            out["SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY"],
            "pk_abc"
        );
        assert_eq!(out["SLUICE__DESTINATIONS__KLAVIYO__KIND"], "klaviyo");
        assert_eq!(
            out["SLUICE__DESTINATIONS__KLAVIYO__PREFERRED_LOCALE"], "en-US",
            "the SLUICE__ variable wins"
        );
        assert_eq!(out["SLUICE__SYNC_API__BIND"], "0.0.0.0:7000");
    }

    #[test]
    fn a_malformed_client_names_the_variable_not_the_secret() {
        let err =
            with_plugin_aliases(env(&[("CT_API_CLIENT", r#"{"clientId":"cid"}"#)])).unwrap_err();
        assert!(
            err.contains("CT_API_CLIENT") && err.contains("secret"),
            "{err}"
        );
        let err = with_plugin_aliases(env(&[("CT_API_CLIENT", "hunter2")])).unwrap_err();
        assert!(
            err.contains("CT_API_CLIENT") && !err.contains("hunter2"),
            "{err}"
        );
        let err = with_plugin_aliases(env(&[("PUB_SUB_PORT", "http")])).unwrap_err();
        assert!(err.contains("PUB_SUB_PORT"), "{err}");
    }

    #[test]
    fn no_plugin_variables_change_nothing() {
        let before = env(&[("SLUICE__AMQP__PREFIX", "x"), ("HOME", "/root")]);
        assert_eq!(with_plugin_aliases(before.clone()).unwrap(), before);
    }
}
