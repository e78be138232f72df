//! The `sluice-fetcher` program, built with the test harness so crash tests can SIGKILL it.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_fetcher::main().await
}
