//! `sluicectl sync <connector> [<stream>] …` and `sluicectl streams`, generated from what
//! the connectors declare ([`sluice_connectors::StreamSpec`]): no copy of any connector's
//! streams or parameters lives here. A connector with one stream takes that stream's
//! options directly (`sluicectl sync sailthru --export …`).
//!
//! Options are checked here before anything is recorded (types, ranges, choices, required
//! parameters, dates), with the messages the connector would give; a plain date
//! `2024-01-01` is taken as midnight UTC.

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{Map, Value, json};
use sluice_connectors::{JobSpec, ParamKind, ParamSpec, Registry, StreamSpec};
use sluice_contracts::{Mode, Settings};

use crate::SyncOptions;

/// A parsed `sluicectl sync …`.
#[derive(Debug, Clone)]
pub struct SyncCommand {
    /// The connector.
    pub connector: String,
    /// The stream.
    pub stream: String,
    /// The job's parameters, as the connector declares them.
    pub params: Value,
    /// Full, or incremental (`--incremental`).
    pub mode: Mode,
    /// Options every sync takes.
    pub options: SyncOptions,
}

/// Every connector's streams, from connectors built over the default settings (declarations
/// do not depend on settings, and building a connector connects to nothing).
fn declarations() -> Vec<(&'static str, Vec<StreamSpec>)> {
    match Registry::from_settings(&Settings::defaults()) {
        Ok(registry) => registry.iter().map(|c| (c.name(), c.streams())).collect(),
        Err(e) => {
            eprintln!("{e}");
            Vec::new()
        }
    }
}

fn common_args(command: Command) -> Command {
    command
        .arg(
            Arg::new("account")
                .long("account")
                .default_value("default")
                .help("Credential set of the connector"),
        )
        .arg(
            Arg::new("destination")
                .long("destination")
                .default_value(sluice_contracts::DEFAULT_DESTINATION)
                .help("Where the records go: a destination of the `destinations` settings (SLUICE__DESTINATIONS__<NAME>__KIND); default postgres, the ledger's database"),
        )
        .arg(
            Arg::new("wait")
                .long("wait")
                .action(ArgAction::SetTrue)
                .help("Follow the job until it ends; exit non-zero unless it succeeded"),
        )
        .arg(
            Arg::new("strict")
                .long("strict")
                .action(ArgAction::SetTrue)
                .help("With --wait: exit 2 when the job succeeded but rejected records"),
        )
        .arg(
            Arg::new("timeout")
                .long("timeout")
                .value_parser(clap::value_parser!(u64))
                .help("With --wait: give up waiting after this many seconds (the job keeps running)"),
        )
}

fn param_arg(param: &ParamSpec) -> Arg {
    let flag = param.flag_name();
    let arg = Arg::new(param.name)
        .long(flag)
        .help(param.help)
        .required(param.required);
    match param.kind {
        ParamKind::Text => arg.value_parser(clap::builder::NonEmptyStringValueParser::new()),
        ParamKind::Instant => arg.value_parser(parse_instant).value_name("TIME"),
        ParamKind::Integer { min, max } => arg
            .value_parser(clap::value_parser!(u64).range(min..=max))
            .value_name("N"),
        ParamKind::Flag => arg.action(ArgAction::SetTrue).required(false),
        ParamKind::Choice(words) => {
            arg.value_parser(clap::builder::PossibleValuesParser::new(words))
        }
        ParamKind::List => arg.action(ArgAction::Append),
        ParamKind::Location => arg.value_parser(parse_location).value_name("LOCATION"),
        ParamKind::Object => arg.value_parser(parse_object).value_name("JSON").hide(true),
    }
}

/// A JSON object (a parameter another service normally fills in).
fn parse_object(value: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(value) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("expected a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// A location as the services must read it: a local path (or `file://` URL) becomes an
/// absolute path against this process's working directory — the services run elsewhere
/// and would resolve a relative one against theirs — and must name an existing file;
/// URLs (`http(s)://`, `s3://`) pass unchanged.
fn parse_location(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("the location is empty".into());
    }
    let local = if value.contains("://") {
        if !value.to_ascii_lowercase().starts_with("file://") {
            return Ok(value.to_string());
        }
        match url::Url::parse(value)
            .ok()
            .and_then(|u| u.to_file_path().ok())
        {
            Some(path) => path,
            None => return Err(format!("{value:?} is not a local file URL")),
        }
    } else {
        std::path::PathBuf::from(value)
    };
    let absolute =
        std::path::absolute(&local).map_err(|e| format!("{value:?} is not a usable path: {e}"))?;
    match std::fs::metadata(&absolute) {
        Ok(meta) if meta.is_file() => absolute
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{} is not valid UTF-8", absolute.display())),
        Ok(_) => Err(format!("{} is not a file", absolute.display())),
        Err(e) => Err(format!("no file {} ({e})", absolute.display())),
    }
}

/// RFC 3339, or a plain date as midnight UTC; the value is passed on as RFC 3339.
fn parse_instant(value: &str) -> Result<String, String> {
    let value = value.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&chrono::Utc).to_rfc3339());
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().to_rfc3339())
        .ok_or_else(|| {
            format!("expected an RFC 3339 time like 2024-01-01T00:00:00Z or a date like 2024-01-01, found {value:?}")
        })
}

fn stream_args(command: Command, stream: &StreamSpec) -> Command {
    let mut command = common_args(command.about(stream.help));
    for param in &stream.params {
        command = command.arg(param_arg(param));
    }
    if stream.incremental {
        command = command.arg(
            Arg::new("incremental")
                .long("incremental")
                .action(ArgAction::SetTrue)
                .help("Continue from the stream's bookmark (minus the lookback)"),
        );
    }
    command
}

/// The `sync` subcommand with one subcommand per connector (and per stream of a connector
/// with several).
pub fn command() -> Command {
    let mut sync = Command::new("sync")
        .about("Start a sync job")
        .subcommand_required(true);
    for (connector, streams) in declarations() {
        let command = match streams.as_slice() {
            [only] => stream_args(Command::new(connector), only),
            many => {
                let mut command = Command::new(connector)
                    .about(format!("Sync a {connector} stream"))
                    .subcommand_required(true);
                for stream in many {
                    command = command.subcommand(stream_args(Command::new(stream.name), stream));
                }
                command
            }
        };
        sync = sync.subcommand(command);
    }
    sync
}

/// Reads a `sync` invocation back from its matches.
///
/// # Errors
/// An unknown connector or stream (clap already refused most mistakes).
pub fn from_matches(matches: &ArgMatches) -> anyhow::Result<SyncCommand> {
    let (connector, connector_matches) = matches
        .subcommand()
        .ok_or_else(|| anyhow::anyhow!("name a connector"))?;
    let streams = declarations()
        .into_iter()
        .find(|(name, _)| *name == connector)
        .map(|(_, s)| s)
        .ok_or_else(|| anyhow::anyhow!("unknown connector {connector}"))?;
    let (stream, m) = match streams.as_slice() {
        [only] => (only.clone(), connector_matches),
        many => {
            let (name, m) = connector_matches
                .subcommand()
                .ok_or_else(|| anyhow::anyhow!("name a {connector} stream"))?;
            let stream = many
                .iter()
                .find(|s| s.name == name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("unknown {connector} stream {name}"))?;
            (stream, m)
        }
    };
    let mut params = Map::new();
    for param in &stream.params {
        let value = match param.kind {
            ParamKind::Flag => m.get_flag(param.name).then_some(json!(true)),
            ParamKind::Integer { .. } => m.get_one::<u64>(param.name).map(|n| json!(n)),
            ParamKind::Object => m.get_one::<Value>(param.name).cloned(),
            ParamKind::List => m
                .get_many::<String>(param.name)
                .map(|values| json!(values.cloned().collect::<Vec<_>>())),
            _ => m.get_one::<String>(param.name).map(|s| json!(s)),
        };
        if let Some(value) = value {
            params.insert(param.name.to_string(), value);
        }
    }
    let incremental = stream.incremental && m.get_flag("incremental");
    Ok(SyncCommand {
        connector: connector.to_string(),
        stream: stream.name.to_string(),
        params: Value::Object(params),
        mode: if incremental {
            Mode::Incremental
        } else {
            Mode::Full
        },
        options: SyncOptions {
            account: m
                .get_one::<String>("account")
                .cloned()
                .unwrap_or_else(|| "default".into()),
            destination: m
                .get_one::<String>("destination")
                .cloned()
                .unwrap_or_else(|| sluice_contracts::DEFAULT_DESTINATION.into()),
            wait: m.get_flag("wait"),
            strict: m.get_flag("strict"),
            timeout: m.get_one::<u64>("timeout").copied(),
        },
    })
}

/// Checks a sync against the actual settings before anything is recorded: every
/// connector's settings section must be readable (a bad one is named), the connector
/// must be built, and its [`sluice_connectors::Connector::validate`] must accept the
/// stream and parameters.
///
/// # Errors
/// The settings error, naming the key; the connector's `invalid job parameters: …`.
pub fn check(settings: &Settings, sync: &SyncCommand) -> anyhow::Result<()> {
    let registry = Registry::from_settings(settings)?;
    let connector = registry
        .get(&sync.connector)
        .ok_or_else(|| anyhow::anyhow!("unknown connector {}", sync.connector))?;
    // The connector's own checks (ranges between parameters, id shapes, …), with the
    // message the planner would fail the job with.
    connector.validate(&JobSpec {
        job_id: uuid::Uuid::nil(),
        stream: sync.stream.clone(),
        account: sync.options.account.clone(),
        params: sync.params.clone(),
        mode: sync.mode,
        bookmark: None,
    })?;
    Ok(())
}

/// `sluicectl streams`: every connector, its streams, their parameters and tables.
pub fn print_streams() {
    for (connector, streams) in declarations() {
        println!("{connector}");
        for stream in streams {
            println!("  {:<18} {}", stream.name, stream.help);
            for p in &stream.params {
                let kind = match p.kind {
                    ParamKind::Text => "text".to_string(),
                    ParamKind::Instant => "time".to_string(),
                    ParamKind::Integer { min, max } => format!("{min}..{max}"),
                    ParamKind::Flag => "flag".to_string(),
                    ParamKind::Choice(words) => words.join("|"),
                    ParamKind::List => "repeatable".to_string(),
                    ParamKind::Location => "location".to_string(),
                    ParamKind::Object => "json".to_string(),
                };
                println!(
                    "    --{:<18} {:<12} {}{}",
                    p.flag_name(),
                    kind,
                    if p.required { "(required) " } else { "" },
                    p.help
                );
            }
            if stream.incremental {
                println!(
                    "    --{:<18} {:<12} continue from the bookmark",
                    "incremental", "flag"
                );
            }
            let tables: Vec<&str> = stream.tables.iter().map(|t| t.name).collect();
            println!("    tables: {}", tables.join(", "));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SyncCommand, String> {
        let matches = Command::new("sluicectl")
            .subcommand(command())
            .try_get_matches_from(std::iter::once("sluicectl").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        from_matches(matches.subcommand_matches("sync").unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn every_declared_stream_is_a_subcommand_with_its_parameters() {
        // Unit tests run in the package's directory: a relative path is resolved here.
        let sync = parse(&[
            "sync",
            "sailthru",
            "--export",
            "Cargo.toml",
            "--page-size",
            "7",
        ])
        .unwrap();
        assert_eq!(
            (sync.connector.as_str(), sync.stream.as_str()),
            ("sailthru", "export")
        );
        let manifest = std::path::absolute("Cargo.toml").unwrap();
        assert_eq!(
            sync.params,
            json!({"export": manifest.to_str().unwrap(), "page_size": 7})
        );
        let url = url::Url::from_file_path(&manifest).unwrap().to_string();
        let sync = parse(&["sync", "sailthru", "--export", &url]).unwrap();
        assert_eq!(sync.params["export"], manifest.to_str().unwrap());
        let remote = parse(&["sync", "sailthru", "--export", "s3://b/k.zip"]).unwrap();
        assert_eq!(remote.params["export"], "s3://b/k.zip");
        let events = parse(&[
            "sync",
            "klaviyo",
            "events",
            "--metric",
            "Placed Order",
            "--metric",
            "X",
            "--since",
            "2024-01-01",
            "--include-profile",
            "--incremental",
            "--destination",
            "rs",
        ])
        .unwrap();
        assert_eq!(events.stream, "events");
        assert_eq!(
            events.params,
            json!({"metrics": ["Placed Order", "X"], "since": "2024-01-01T00:00:00+00:00", "include_profile": true})
        );
        assert_eq!(events.mode, Mode::Incremental);
        assert_eq!(events.options.destination, "rs");
    }

    #[test]
    fn bad_options_are_refused_before_a_job_exists() {
        for (args, needle) in [
            (vec!["sync", "sailthru"], "--export"),
            (
                vec![
                    "sync",
                    "sailthru",
                    "--export",
                    "Cargo.toml",
                    "--page-size",
                    "0",
                ],
                "page-size",
            ),
            (
                vec![
                    "sync",
                    "sailthru",
                    "--export",
                    "Cargo.toml",
                    "--email-policy",
                    "encrypt",
                ],
                "encrypt",
            ),
            (
                vec!["sync", "klaviyo", "events", "--since", "yesterday"],
                "yesterday",
            ),
            (vec!["sync", "klaviyo", "segment_members"], "--segment"),
            (
                vec!["sync", "klaviyo", "metrics", "--incremental"],
                "incremental",
            ),
            (vec!["sync", "klaviyo", "forms"], "forms"),
            (
                vec!["sync", "sailthru", "--export", "missing.zip"],
                "missing.zip",
            ),
        ] {
            let err = parse(&args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let missing = parse(&["sync", "sailthru", "--export", "missing.zip"]).unwrap_err();
        let absolute = std::path::absolute("missing.zip").unwrap();
        assert!(
            missing.contains(&format!("no file {}", absolute.display())),
            "{missing}"
        );
    }

    #[test]
    fn the_connectors_own_checks_run_before_a_job_exists() {
        let settings = Settings::defaults();
        for (args, needle) in [
            (
                vec![
                    "sync",
                    "klaviyo",
                    "events",
                    "--since",
                    "2024-02-01",
                    "--until",
                    "2024-01-01",
                ],
                "invalid job parameters: parameter 'since' (2024-02-01 00:00:00 UTC) must be before 'until' (2024-01-01 00:00:00 UTC)",
            ),
            (
                vec!["sync", "klaviyo", "list_members", "--list", "a/b"],
                "parameter 'list' is not a Klaviyo id",
            ),
            (
                vec![
                    "sync",
                    "commercetools",
                    "orders",
                    "--since",
                    "2024-03-01",
                    "--until",
                    "2024-03-01",
                ],
                "must be before 'until'",
            ),
        ] {
            let sync = parse(&args).unwrap();
            let err = check(&settings, &sync).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let fine = parse(&["sync", "klaviyo", "events", "--since", "2024-01-01"]).unwrap();
        check(&settings, &fine).unwrap();
    }
}
