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
//! - [`TableSpec`]: a destination table's shape; [`Collector`]: the rows of a task, record
//!   by record, with the rules every connector shares (a later copy of a record replaces
//!   the earlier one; collections name their parents).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_contracts::{MergeSpec, Settings, TaskKind};

use crate::{Cell, ConnectorError, TableRows};

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
    /// A JSON object of settings another service fills in (the planner's `klaviyo`
    /// mapping options of a commercetools job); the CLI hides it and takes it as JSON.
    Object,
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

    /// `rows` (values in `columns` order) as one part of this table, with its merge
    /// options: for a part built whole rather than record by record — a sweep without
    /// rows, or one parent's collection fetched on its own.
    pub fn table_rows(&'static self, rows: Vec<Vec<Value>>) -> TableRows {
        let rows: Vec<Vec<Cell>> = rows.into_iter().map(crate::cells).collect();
        debug_assert!(
            rows.iter().all(|r| r.len() == self.columns.len()),
            "{}",
            self.name
        );
        TableRows {
            table: self.name.to_string(),
            columns: self.columns.iter().map(|c| (*c).to_string()).collect(),
            rows,
            merge: self.merge(),
        }
    }
}

/// The rows of a task (or of one page of it), collected record by record: the one row
/// collector of every connector.
///
/// A *record* is one row of a table plus the rows it brings to other tables (a message's
/// actions, an order's line items, a profile's vars). The rules, which every connector
/// shares:
/// - a record whose table and primary key were collected before replaces the earlier one,
///   with everything it brought: within one task the later copy is the newer;
/// - rows a record brings that share a primary key collapse to the last one;
/// - a *collection* — a table with `replace_scope` — belongs to the collector's first
///   table: its part names, in `scope_keys`, the primary key of every record of that
///   table (the collection's scope columns hold their parent's key, in order), so a
///   collection that became empty is emptied too; [`Collector::scope_version`] and
///   [`Collector::scope_parent`] add the version guard of the parent;
/// - [`Collector::finish`] gives one [`TableRows`] per table, in the order the tables were
///   given, leaving out tables that say nothing ([`TableRows::is_void`]).
#[derive(Debug)]
pub struct Collector {
    tables: Vec<&'static TableSpec>,
    records: Vec<Option<Record>>,
    /// (table index, primary key) → index into `records` (foldhash: a record's key is
    /// hashed once or twice per record, and SipHash was a tenth of a fetcher's CPU).
    by_key: foldhash::HashMap<(usize, Vec<Value>), usize>,
    scope_version: Option<Value>,
    scope_parent: bool,
    live: usize,
}

#[derive(Debug)]
struct Record {
    table: usize,
    row: Vec<Cell>,
    brought: Vec<(usize, Vec<Cell>)>,
}

impl Collector {
    /// A collector of rows of `tables` (the first is the parent of any collection among
    /// the others).
    pub fn new(tables: &[&'static TableSpec]) -> Self {
        debug_assert!(
            tables.first().is_none_or(|t| t.replace_scope.is_none()),
            "a collector's first table is the parent of its collections"
        );
        Self {
            tables: tables.to_vec(),
            records: Vec::new(),
            by_key: foldhash::HashMap::default(),
            scope_version: None,
            scope_parent: false,
            live: 0,
        }
    }

    /// Collection parts carry `version` as their parents' version (`MergeSpec::scope_version`).
    pub fn scope_version(mut self, version: Value) -> Self {
        self.scope_version = Some(version);
        self
    }

    /// Collection parts name the first table as `MergeSpec::scope_parent`, whose stored
    /// version guards their rows (its key columns must carry the collections' scope names).
    pub fn scope_parent(mut self) -> Self {
        self.scope_parent = true;
        self
    }

    fn index(&self, table: &TableSpec) -> usize {
        self.tables
            .iter()
            .position(|t| std::ptr::eq(*t, table) || t.name == table.name)
            .unwrap_or_else(|| panic!("{} is not a table of this collector", table.name))
    }

    fn key(spec: &TableSpec, row: &[Cell]) -> Vec<Value> {
        spec.key
            .iter()
            .filter_map(|k| spec.columns.iter().position(|c| c == k))
            .map(|i| row.get(i).map_or(Value::Null, |c| c.value().into_owned()))
            .collect()
    }

    /// Adds a record: `row` of `table` (values in its column order) and the rows it brings
    /// to other tables of the collector.
    ///
    /// # Panics
    /// When a table is not one of the collector's (a connector bug, not bad input).
    pub fn add(
        &mut self,
        table: &'static TableSpec,
        row: Vec<Value>,
        brought: Vec<(&'static TableSpec, Vec<Value>)>,
    ) {
        let brought = brought
            .into_iter()
            .map(|(spec, row)| {
                debug_assert_eq!(row.len(), spec.columns.len(), "{}", spec.name);
                (self.index(spec), crate::cells(row))
            })
            .collect();
        self.push(table, crate::cells(row), brought);
    }

    /// Adds a row of cells (some passed through as raw JSON) of `table` that brings nothing
    /// else.
    ///
    /// # Panics
    /// When `table` is not one of the collector's (a connector bug, not bad input).
    pub fn add_cells(&mut self, table: &'static TableSpec, row: Vec<Cell>) {
        self.push(table, row, Vec::new());
    }

    fn push(
        &mut self,
        table: &'static TableSpec,
        row: Vec<Cell>,
        brought: Vec<(usize, Vec<Cell>)>,
    ) {
        debug_assert_eq!(row.len(), table.columns.len(), "{}", table.name);
        let t = self.index(table);
        let key = Self::key(table, &row);
        let at = self.records.len();
        self.records.push(Some(Record {
            table: t,
            row,
            brought,
        }));
        self.live += 1;
        if let Some(old) = self.by_key.insert((t, key), at) {
            self.records[old] = None;
            self.live -= 1;
        }
    }

    /// Adds a row of `table` that brings nothing else.
    pub fn add_row(&mut self, table: &'static TableSpec, row: Vec<Value>) {
        self.add(table, row, Vec::new());
    }

    /// Takes out the records of `table` whose row `drop` returns true for, with what they
    /// brought; returns their own rows, in order.
    pub fn remove(
        &mut self,
        table: &'static TableSpec,
        mut drop: impl FnMut(&[Cell]) -> bool,
    ) -> Vec<Vec<Cell>> {
        let t = self.index(table);
        let mut removed = Vec::new();
        for slot in &mut self.records {
            if slot.as_ref().is_some_and(|r| r.table == t && drop(&r.row))
                && let Some(record) = slot.take()
            {
                removed.push(record.row);
                self.live -= 1;
            }
        }
        let records = &self.records;
        self.by_key.retain(|_, at| records[*at].is_some());
        removed
    }

    /// Records collected (replaced copies not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no record was collected.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The rows collected so far, leaving the collector empty (for emitting page by page).
    pub fn take(&mut self) -> Vec<TableRows> {
        // Sized like the page just taken: the next page is usually as large, and growing
        // the key index from empty rehashes every key several times per page.
        let empty = Collector {
            tables: self.tables.clone(),
            records: Vec::with_capacity(self.records.len()),
            by_key: foldhash::HashMap::with_capacity_and_hasher(
                self.by_key.len(),
                foldhash::fast::RandomState::default(),
            ),
            scope_version: self.scope_version.clone(),
            scope_parent: self.scope_parent,
            live: 0,
        };
        std::mem::replace(self, empty).finish()
    }

    /// One [`TableRows`] per table, in the collector's order (see the type's rules).
    pub fn finish(self) -> Vec<TableRows> {
        let mut rows: Vec<Vec<Vec<Cell>>> = vec![Vec::new(); self.tables.len()];
        let mut parents: Vec<Vec<Value>> = Vec::new();
        // Rows brought by records: (table, key) → position in `rows[table]`.
        let mut seen: foldhash::HashMap<(usize, Vec<Value>), usize> = foldhash::HashMap::default();
        for record in self.records.into_iter().flatten() {
            if record.table == 0 {
                parents.push(Self::key(self.tables[0], &record.row));
            }
            rows[record.table].push(record.row);
            for (t, row) in record.brought {
                let key = Self::key(self.tables[t], &row);
                match seen.entry((t, key)) {
                    std::collections::hash_map::Entry::Occupied(at) => rows[t][*at.get()] = row,
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(rows[t].len());
                        rows[t].push(row);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (t, spec) in self.tables.iter().enumerate() {
            let mut merge = spec.merge();
            if t > 0 && spec.replace_scope.is_some() {
                merge.scope_keys = parents.clone();
                merge.scope_version = self.scope_version.clone();
                merge.scope_parent = self.scope_parent.then(|| self.tables[0].name.to_string());
            }
            let table = TableRows {
                table: spec.name.to_string(),
                columns: spec.columns.iter().map(|c| (*c).to_string()).collect(),
                rows: std::mem::take(&mut rows[t]),
                merge,
            };
            if !table.is_void() {
                out.push(table);
            }
        }
        out
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

    static PARENT: TableSpec = TableSpec {
        name: "t.parent",
        columns: &["id", "v"],
        key: &["id"],
        version: Some("v"),
        replace_scope: None,
    };
    static KIDS: TableSpec = TableSpec {
        name: "t.kids",
        columns: &["parent_id", "n", "v"],
        key: &["parent_id", "n"],
        version: Some("v"),
        replace_scope: Some(&["parent_id"]),
    };
    static EXTRA: TableSpec = TableSpec {
        name: "t.extra",
        columns: &["id", "x"],
        key: &["id"],
        version: None,
        replace_scope: None,
    };

    fn kid(parent: &str, n: i64, v: i64) -> (&'static TableSpec, Vec<Value>) {
        (&KIDS, vec![json!(parent), json!(n), json!(v)])
    }

    #[test]
    fn a_later_copy_of_a_record_replaces_it_with_what_it_brought() {
        let mut c = Collector::new(&[&PARENT, &KIDS, &EXTRA]);
        c.add(
            &PARENT,
            vec![json!("a"), json!(1)],
            vec![kid("a", 1, 1), kid("a", 2, 1)],
        );
        c.add(&PARENT, vec![json!("b"), json!(1)], vec![]);
        // The newer copy of `a` has one kid left: kid 2 must go with the old copy.
        c.add(&PARENT, vec![json!("a"), json!(2)], vec![kid("a", 1, 2)]);
        c.add_row(&EXTRA, vec![json!("a"), json!("x")]);
        assert_eq!(c.len(), 3);
        let tables = c.finish();
        let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();
        assert_eq!(names, ["t.parent", "t.kids", "t.extra"]);
        assert_eq!(
            tables[0].rows,
            vec![vec![json!("b"), json!(1)], vec![json!("a"), json!(2)]]
        );
        assert_eq!(tables[1].rows, vec![vec![json!("a"), json!(1), json!(2)]]);
        // Both parents are named, `b` with its empty collection.
        assert_eq!(
            tables[1].merge.scope_keys,
            vec![vec![json!("b")], vec![json!("a")]]
        );
        assert_eq!(
            tables[1].merge.replace_scope,
            Some(vec!["parent_id".into()])
        );
        assert!(tables[2].merge.scope_keys.is_empty());
    }

    #[test]
    fn brought_rows_with_one_key_collapse_to_the_last_and_scope_options_apply() {
        let mut c = Collector::new(&[&PARENT, &KIDS])
            .scope_version(json!("2024-01-01"))
            .scope_parent();
        c.add(
            &PARENT,
            vec![json!("a"), json!(1)],
            vec![kid("a", 1, 1), kid("a", 1, 5)],
        );
        let tables = c.take();
        assert_eq!(tables[1].rows, vec![vec![json!("a"), json!(1), json!(5)]]);
        assert_eq!(tables[1].merge.scope_version, Some(json!("2024-01-01")));
        assert_eq!(tables[1].merge.scope_parent.as_deref(), Some("t.parent"));
        // `take` leaves an empty collector with the same options.
        assert!(c.is_empty());
        c.add(&PARENT, vec![json!("c"), json!(1)], vec![]);
        let again = c.finish();
        assert_eq!(again.len(), 2, "the empty collection of c is still sent");
        assert_eq!(again[1].merge.scope_parent.as_deref(), Some("t.parent"));
    }

    #[test]
    fn removed_records_leave_with_what_they_brought_and_void_tables_are_left_out() {
        let mut c = Collector::new(&[&PARENT, &KIDS, &EXTRA]);
        c.add(&PARENT, vec![json!("a"), json!(1)], vec![kid("a", 1, 1)]);
        c.add(&PARENT, vec![json!("b"), json!(1)], vec![kid("b", 1, 1)]);
        let removed = c.remove(&PARENT, |row| row[0] == json!("a"));
        assert_eq!(removed, vec![vec![json!("a"), json!(1)]]);
        assert_eq!(c.len(), 1);
        // A removed key can be added again.
        c.add(&PARENT, vec![json!("a"), json!(3)], vec![]);
        let tables = c.finish();
        assert_eq!(tables.len(), 2, "no extra rows: no extra part");
        assert_eq!(
            tables[0].rows,
            vec![vec![json!("b"), json!(1)], vec![json!("a"), json!(3)]]
        );
        assert_eq!(tables[1].rows, vec![vec![json!("b"), json!(1), json!(1)]]);
        assert!(Collector::new(&[&PARENT, &KIDS]).finish().is_empty());
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
