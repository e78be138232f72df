//! The `sluice-fetcher` program, built with the test harness so crash tests can SIGKILL it.
//! With `SLUICE_E2E_POISON=1` it also knows the test connector `poison`.

use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var("SLUICE_E2E_POISON").is_err() {
        return sluice_fetcher::main().await;
    }
    let settings = sluice_contracts::Settings::load()?;
    let _telemetry = sluice_service::init_tracing(&settings, "sluice-fetcher");
    let context = sluice_connectors::ConnectorContext::default();
    let mut registry = sluice_connectors::Registry::from_settings_with(&settings, context.clone())?;
    registry.insert(Arc::new(sluice_e2e::poison::PoisonConnector));
    sluice_fetcher::run_with(
        settings,
        registry,
        context,
        sluice_service::shutdown_signal(),
    )
    .await
}
