//! `sluice-fetcher`: see the crate docs of `sluice_fetcher`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_fetcher::main().await
}
