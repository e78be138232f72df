//! What every connector declares and reads through the same code: its settings section
//! (with its defaults beside it), its streams with their typed parameters and tables, its
//! own task payloads, and the rows it produces.
//!
//! - [`settings_section`]: a connector's `[connectors.<name>]` section over its defaults;
//! - [`StreamSpec`], [`ParamSpec`]: what `sluicectl sync <connector> <stream>` and
//!   `sluicectl streams` show and check, from the connector's own declarations;
//! - [`parse_params`]: a job's parameters into the stream's typed struct
//!   (`#[serde(deny_unknown_fields)]`), with errors naming the parameter;
//! - [`task_payload`] / [`payload_kind`]: a connector's own task payload in
//!   `TaskKind::Connector`;
//! - [`TableSpec`], [`Rows`]: a destination table's shape and a collector of its rows.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_contracts::{MergeSpec, Settings, TaskKind};

use crate::{ConnectorError, TableRows};

/// A connector's settings could not be read: the message names the key
/// (`connectors.klaviyo.page_sizes.events`) and never a secret's value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration of connector {connector}: {message}")]
pub struct SettingsError {
    /// The connector's name.
    pub connector: &'static str,
    /// What is wrong, naming the key.
    pub message: String,
}

/// Reads the `[connectors.<name>]` section of `settings` (environment
/// `SLUICE__CONNECTORS__<NAME>__…`) layered over the connector's `defaults` (TOML of the
/// section's keys, without the table header), into the connector's settings type.
///
/// # Errors
/// [`SettingsError`] naming the key that does not fit (config's own message).
pub fn settings_section<T: DeserializeOwned>(
    settings: &Settings,
    name: &'static str,
    defaults: &str,
) -> Result<T, SettingsError> {
    let error = |e: config::ConfigError| SettingsError {
        connector: name,
        message: e.to_string(),
    };
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(defaults, config::FileFormat::Toml));
    if let Some(section) = settings.connectors.get(name) {
        builder = builder.add_source(config::Config::try_from(&section.0).map_err(error)?);
    }
    builder
        .build()
        .map_err(error)?
        .try_deserialize()
        .map_err(error)
}

/// The type of one job parameter, as the CLI parses it and the connector reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A string (an id, a name, a location).
    Text,
    /// An RFC 3339 instant; the CLI also takes a plain date (`2024-01-01`, midnight UTC).
    Instant,
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// `true`/`false`; the CLI flag takes no value.
    Flag,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A list of strings; the CLI flag repeats.
    List,
    /// Where a file is: a local path, `file://…`, `http(s)://…` or `s3://bucket/key`
    /// ([`crate::location`]). The CLI turns a local path into an absolute one against the
    /// caller's working directory and refuses a file that does not exist there; the
    /// planner and the fetchers must then be able to read that same absolute path.
    Location,
}

/// One parameter a stream accepts (its key in `JobRequest.params`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// The key, snake_case (`page_size`); the CLI flag is its kebab-case (`--page-size`).
    pub name: &'static str,
    /// The flag's name on the CLI when it differs from the key (`metric` for `metrics`).
    pub flag: Option<&'static str>,
    /// Its type.
    pub kind: ParamKind,
    /// Whether a job must name it.
    pub required: bool,
    /// One line for `--help` and `sluicectl streams`.
    pub help: &'static str,
}

impl ParamSpec {
    /// An optional parameter.
    pub const fn optional(name: &'static str, kind: ParamKind, help: &'static str) -> Self {
        Self {
            name,
            flag: None,
            kind,
            required: false,
            help,
        }
    }

    /// A parameter every job of the stream must name.
    pub const fn required(name: &'static str, kind: ParamKind, help: &'static str) -> Self {
        Self {
            name,
            flag: None,
            kind,
            required: true,
            help,
        }
    }

    /// The same parameter under another CLI flag.
    pub const fn flag(mut self, flag: &'static str) -> Self {
        self.flag = Some(flag);
        self
    }

    /// The CLI flag (without `--`).
    pub fn flag_name(&self) -> String {
        self.flag
            .map(str::to_string)
            .unwrap_or_else(|| self.name.replace('_', "-"))
    }
}

/// One stream a connector offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream's name in jobs (`events`).
    pub name: &'static str,
    /// One line for `--help` and `sluicectl streams`.
    pub help: &'static str,
    /// The parameters it accepts.
    pub params: Vec<ParamSpec>,
    /// Whether it takes `--incremental` (continue from the bookmark).
    pub incremental: bool,
    /// The destination tables its records land in.
    pub tables: Vec<&'static TableSpec>,
}

/// Reads a job's parameters into the stream's typed struct `P` (which should be
/// `#[serde(deny_unknown_fields)]`): a key the stream does not declare is refused naming
/// the declared ones, then serde checks the types.
///
/// # Errors
/// [`ConnectorError::InvalidParams`] naming the parameter and the stream.
pub fn parse_params<P: DeserializeOwned>(
    connector: &str,
    stream: &StreamSpec,
    params: &Value,
) -> Result<P, ConnectorError> {
    let invalid = ConnectorError::InvalidParams;
    let object = match params {
        Value::Null => serde_json::Map::new(),
        Value::Object(o) => o.clone(),
        other => {
            return Err(invalid(format!(
                "{connector} params must be an object, found {}",
                crate::short(other)
            )));
        }
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !stream.params.iter().any(|p| p.name == k.as_str()))
    {
        let accepted: Vec<&str> = stream.params.iter().map(|p| p.name).collect();
        return Err(invalid(format!(
            "parameter '{unknown}' is not accepted by {connector} stream {} (accepted: {})",
            stream.name,
            if accepted.is_empty() {
                "none".to_string()
            } else {
                accepted.join(", ")
            }
        )));
    }
    if let Some(missing) = stream
        .params
        .iter()
        .find(|p| p.required && object.get(p.name).is_none_or(Value::is_null))
    {
        return Err(invalid(format!(
            "missing parameter '{}': {}",
            missing.name, missing.help
        )));
    }
    // Nulls mean "not given".
    let object: serde_json::Map<String, Value> =
        object.into_iter().filter(|(_, v)| !v.is_null()).collect();
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
        invalid(format!(
            "parameter '{}' of {connector} stream {}: {}",
            e.path(),
            stream.name,
            e.inner()
        ))
    })
}

/// A connector's own task payload as a `TaskKind` (serialised as
/// `{"type": "connector", …payload}`; the payload must serialise to a JSON object).
pub fn payload_kind<T: Serialize>(payload: &T) -> TaskKind {
    TaskKind::Connector(serde_json::to_value(payload).unwrap_or(Value::Null))
}

/// The connector's own payload of a task.
///
/// # Errors
/// [`ConnectorError::Permanent`] when the task carries another kind or a payload that does
/// not fit `T` (a task of another version of the connector).
pub fn task_payload<T: DeserializeOwned>(kind: &TaskKind) -> Result<T, ConnectorError> {
    match kind {
        TaskKind::Connector(value) => serde_json::from_value(value.clone()).map_err(|e| {
            ConnectorError::Permanent(anyhow::anyhow!("unreadable task payload: {e}"))
        }),
        other => Err(ConnectorError::Permanent(anyhow::anyhow!(
            "expected a connector task payload, found {other:?}"
        ))),
    }
}

/// A destination table: schema-qualified name, columns in row order, primary key, version
/// column and — for a table mirroring a collection of a parent — the parent's columns that
/// scope replacement. The table itself is created by a migration in `migrations/`.
#[derive(Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Schema-qualified name (`sailthru.message_blast`).
    pub name: &'static str,
    /// Column names in the order of each row's values.
    pub columns: &'static [&'static str],
    /// Primary-key columns (a subset of `columns`).
    pub key: &'static [&'static str],
    /// The column ordering versions of a record: an existing row is only replaced by a row
    /// whose version is greater or equal.
    pub version: Option<&'static str>,
    /// For child tables mirroring a parent's collection: the parent columns that scope
    /// replacement (`["id"]`).
    pub replace_scope: Option<&'static [&'static str]>,
}

impl TableSpec {
    /// How the loader merges this table.
    pub fn merge(&self) -> MergeSpec {
        MergeSpec {
            version_column: self.version.map(str::to_string),
            replace_scope: self
                .replace_scope
                .map(|cols| cols.iter().map(|c| (*c).to_string()).collect()),
            ..MergeSpec::default()
        }
    }

    /// Positions of the primary-key columns within `columns`.
    pub fn key_positions(&self) -> Vec<usize> {
        self.key
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| c == k))
            .collect()
    }

    /// An empty batch of this table's rows.
    pub fn rows(&'static self) -> Rows {
        Rows {
            spec: self,
            rows: Vec::new(),
        }
    }
}

/// Rows of one table being collected by a fetch.
#[derive(Debug)]
pub struct Rows {
    /// The table.
    pub spec: &'static TableSpec,
    /// Rows aligned with `spec.columns`.
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// Adds a row (values in `spec.columns` order).
    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.spec.columns.len(), "{}", self.spec.name);
        self.rows.push(row);
    }

    /// Whether no row was collected.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The collected rows as one `RecordBatch`-to-be.
    pub fn finish(self) -> TableRows {
        TableRows {
            table: self.spec.name.to_string(),
            columns: self.spec.columns.iter().map(|c| (*c).to_string()).collect(),
            rows: self.rows,
            merge: self.spec.merge(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;
    use crate::klaviyo::settings::{DEFAULT_KLAVIYO_BASE_URL, KlaviyoSettings};
    use crate::sailthru::settings::{EmailPolicy, SailthruSettings};

    fn settings(env: &[(&str, &str)]) -> Settings {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    #[test]
    fn a_connector_reads_its_section_over_its_defaults() {
        let s = settings(&[
            ("SLUICE__CONNECTORS__SAILTHRU__PAGE_SIZE", "7"),
            ("SLUICE__CONNECTORS__SAILTHRU__EMAIL_POLICY", "drop"),
            (
                "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__DEFAULT__API_KEY",
                "pk_secret_123",
            ),
            (
                "SLUICE__CONNECTORS__KLAVIYO__ACCOUNTS__EU__BASE_URL",
                "http://127.0.0.1:9",
            ),
            (
                "SLUICE__CONNECTORS__KLAVIYO__RATE_LIMITS__XL__STEADY_PER_MINUTE",
                "3000",
            ),
        ]);
        let sailthru: SailthruSettings =
            settings_section(&s, "sailthru", crate::sailthru::settings::DEFAULTS).unwrap();
        assert_eq!(sailthru.page_size, 7);
        assert_eq!(sailthru.email_policy, EmailPolicy::Drop);
        let k: KlaviyoSettings =
            settings_section(&s, "klaviyo", crate::klaviyo::settings::DEFAULTS).unwrap();
        assert_eq!(k.revision, "2026-07-15");
        assert_eq!(k.page_sizes.events, 1000);
        let default = &k.accounts["default"];
        assert_eq!(default.base_url, DEFAULT_KLAVIYO_BASE_URL);
        assert_eq!(
            default.api_key.as_ref().unwrap().expose_secret(),
            "pk_secret_123"
        );
        assert!(k.accounts["eu"].api_key.is_none());
        assert_eq!(k.accounts["eu"].base_url, "http://127.0.0.1:9");
        // One key of a tier overridden, the other kept from the defaults.
        assert_eq!(k.rate_limits["xl"].steady_per_minute, 3000.0);
        assert_eq!(k.rate_limits["xl"].burst_per_second, 350.0);
        assert!(!format!("{k:?}").contains("pk_secret_123"));
    }

    #[test]
    fn a_bad_setting_names_its_key_and_the_registry_refuses_to_build() {
        let s = settings(&[("SLUICE__CONNECTORS__SAILTHRU__EMAIL_POLICY", "encrypt")]);
        let err = settings_section::<SailthruSettings>(
            &s,
            "sailthru",
            crate::sailthru::settings::DEFAULTS,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("email_policy") && err.contains("sailthru"),
            "{err}"
        );
        assert!(crate::Registry::from_settings(&s).is_err());
        assert!(crate::Registry::from_settings(&Settings::defaults()).is_ok());
    }

    #[test]
    fn params_are_typed_and_errors_name_the_parameter() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            #[allow(dead_code)]
            page_size: Option<u64>,
            #[allow(dead_code)]
            export: String,
        }
        let stream = StreamSpec {
            name: "export",
            help: "",
            params: vec![
                ParamSpec::required("export", ParamKind::Text, "the archive"),
                ParamSpec::optional("page_size", ParamKind::Integer { min: 1, max: 10 }, ""),
            ],
            incremental: false,
            tables: vec![],
        };
        let err = |v| parse_params::<P>("x", &stream, &v).unwrap_err().to_string();
        assert!(err(json!({"nope": 1})).contains(
            "parameter 'nope' is not accepted by x stream export (accepted: export, page_size)"
        ));
        assert!(err(json!({})).contains("missing parameter 'export': the archive"));
        let typed = err(json!({"export": "a.zip", "page_size": "ten"}));
        assert!(
            typed.contains("parameter 'page_size'") && typed.contains("invalid type"),
            "{typed}"
        );
        assert!(
            parse_params::<P>("x", &stream, &json!({"export": "a.zip", "page_size": null})).is_ok()
        );
    }

    #[test]
    fn connector_payloads_round_trip_through_the_task_kind() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Range {
            after: Option<String>,
            before: String,
        }
        let range = Range {
            after: None,
            before: "8".into(),
        };
        let kind = payload_kind(&range);
        let wire = serde_json::to_value(&kind).unwrap();
        assert_eq!(
            wire,
            json!({"type": "connector", "after": null, "before": "8"})
        );
        let back: TaskKind = serde_json::from_value(wire).unwrap();
        assert_eq!(task_payload::<Range>(&back).unwrap(), range);
        assert!(task_payload::<Range>(&TaskKind::Ids { ids: vec![] }).is_err());
    }
}
