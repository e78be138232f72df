//! `sluice-fetcher`: see the crate docs of `sluice_fetcher`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = sluice_contracts::Settings::load()?;
    sluice_service::init_tracing(&settings.log);
    sluice_fetcher::run(settings, sluice_service::shutdown_signal()).await
}
