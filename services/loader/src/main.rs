//! `sluice-loader`: see the crate docs of `sluice_loader`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_loader::main().await
}
