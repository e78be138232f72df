//! `sluice-loader`: see the crate docs of `sluice_loader`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = sluice_contracts::Settings::load()?;
    sluice_service::init_tracing(&settings.log);
    sluice_loader::run(settings, sluice_service::shutdown_signal()).await
}
