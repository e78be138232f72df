//! `sluicectl check <connector> [--account A]`: credentials and reachability of an
//! outside system, without a job (the connector's [`sluice_connectors::Connector::check`]).

use std::process::ExitCode;
use std::time::Duration;

use sluice_connectors::Registry;
use sluice_contracts::Settings;

/// How long a check may take before it is reported as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the connector's check for `account`; prints what was checked (exit 0) or why it
/// failed (exit 1). Touches neither the ledger nor RabbitMQ.
pub(crate) async fn check(
    settings: &Settings,
    connector: &str,
    account: &str,
) -> anyhow::Result<ExitCode> {
    let registry = Registry::from_settings(settings)?;
    let Some(c) = registry.get(connector) else {
        let known: Vec<&str> = registry.iter().map(|c| c.name()).collect();
        anyhow::bail!(
            "unknown connector {connector:?} (known: {})",
            known.join(", ")
        );
    };
    match tokio::time::timeout(CHECK_TIMEOUT, c.check(account)).await {
        Ok(Ok(what)) => {
            println!("ok {connector}: {what}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => {
            eprintln!("failed {connector} account {account}: {e}");
            Ok(ExitCode::from(1))
        }
        Err(_) => {
            eprintln!(
                "failed {connector} account {account}: no answer within {} s",
                CHECK_TIMEOUT.as_secs()
            );
            Ok(ExitCode::from(1))
        }
    }
}
